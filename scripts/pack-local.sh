#!/usr/bin/env bash
# Packs tsdump the way it is published: the main package (JavaScript, no binary) and the
# per-platform package carrying this machine's .node, as pack/*.tgz. Installing both tarballs
# into an empty folder gives a working `npx tsdump` without a Rust toolchain.
#
# As napi-rs's prepublish step does, the per-platform packages are added to the packed
# package.json's optionalDependencies here rather than in the repository's, where they would
# put unpublished packages into package-lock.json.
#
# `pack-local.sh --target T` writes only the platform package T into pack/cross/, T one of
# x86_64, aarch64 (glibc), x86_64-musl, aarch64-musl.
#
# The platform binaries are release builds made the way they are published, whatever machine
# packs them: cargo-zigbuild links them with zig (PyPI: `pip install ziglang cargo-zigbuild`)
# against glibc 2.17, so they load on every glibc distribution from 2.17 on (RHEL 7+, Debian 8+,
# Ubuntu 14.04+), or against musl for Alpine-based images. rustup provides each target's standard
# library; the parasite blob is compiled by the target's gcc (gcc-aarch64-linux-gnu for aarch64).
# They build in target/pack, apart from the development build (npm run build:native).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

case "$(uname -m)" in
  x86_64) target=x86_64 ;;
  aarch64) target=aarch64 ;;
  *) echo "pack-local: no platform package for $(uname -m)" >&2; exit 1 ;;
esac
cross=
if [ "${1:-}" = --target ]; then
  cross=${2:?--target needs x86_64, aarch64, x86_64-musl or aarch64-musl}
  target=$cross
fi
case "$target" in
  x86_64) triple=x86_64-unknown-linux-gnu.2.17 platform=linux-x64-gnu ;;
  aarch64) triple=aarch64-unknown-linux-gnu.2.17 platform=linux-arm64-gnu ;;
  x86_64-musl) triple=x86_64-unknown-linux-musl platform=linux-x64-musl ;;
  aarch64-musl) triple=aarch64-unknown-linux-musl platform=linux-arm64-musl ;;
  *) echo "pack-local: unknown target $target (x86_64, aarch64, x86_64-musl, aarch64-musl)" >&2; exit 1 ;;
esac
command -v cargo-zigbuild >/dev/null || {
  echo "pack-local: release binaries are linked by cargo-zigbuild: pip install ziglang cargo-zigbuild" >&2
  exit 1
}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/main" "$stage/platform" "$stage/bin" pack

# The generated loader and types stay in the stage: native/ keeps the development build's.
# (A musl cdylib must link libc dynamically, as Node itself does there.)
rustflags=${RUSTFLAGS:-}
[[ $triple == *musl ]] && rustflags="$rustflags -C target-feature=-crt-static"
RUSTFLAGS=$rustflags npx napi build --platform --release -x --target "$triple" --target-dir target/pack \
  --manifest-path crates/napi/Cargo.toml --package-json-path package.json --output-dir "$stage/bin" \
  --no-js --dts index.d.ts >"$stage/build.log" 2>&1 || { cat "$stage/build.log" >&2; exit 1; }
cp -r "npm/$platform/." "$stage/platform/"
cp "$stage/bin/tsdump.$platform.node" "$stage/platform/"

if [ -n "$cross" ]; then
  mkdir -p pack/cross
  rm -f "pack/cross/tsdump-$platform-"*.tgz
  (cd "$stage/platform" && npm pack --ignore-scripts --loglevel=warn --pack-destination "$root/pack/cross" >/dev/null)
  ls -1 "$root/pack/cross/tsdump-$platform-"*.tgz
  exit 0
fi

# Compiled into the stage, not dist/: tests running meanwhile load dist/ and must not see it
# half rewritten.
npx tsc -p tsconfig.json --outDir "$stage/dist"
node scripts/build-cli.mjs "$stage/dist"
rm -f pack/*.tgz

# main package: exactly what package.json "files" names, plus the README
node - "$stage/main" "$stage/dist" <<'JS'
const fs = require('node:fs');
const path = require('node:path');
const out = process.argv[2];
const freshDist = process.argv[3];
const pkg = JSON.parse(fs.readFileSync('package.json', 'utf8'));
const platforms = fs.readdirSync('npm').filter((d) => fs.existsSync(path.join('npm', d, 'package.json')));
pkg.optionalDependencies = {};
for (const d of platforms) {
  const p = JSON.parse(fs.readFileSync(path.join('npm', d, 'package.json'), 'utf8'));
  if (p.version !== pkg.version) throw new Error(`npm/${d} is version ${p.version}, tsdump is ${pkg.version}`);
  pkg.optionalDependencies[p.name] = p.version;
}
delete pkg.scripts.prepare; // a tarball install must never try to build
fs.writeFileSync(path.join(out, 'package.json'), JSON.stringify(pkg, null, 2) + '\n');
for (const f of [...pkg.files, 'README.md']) fs.cpSync(f === 'dist' ? freshDist : f, path.join(out, f), { recursive: true });
JS

(cd "$stage/main" && npm pack --ignore-scripts --loglevel=warn --pack-destination "$root/pack" >/dev/null)
(cd "$stage/platform" && npm pack --ignore-scripts --loglevel=warn --pack-destination "$root/pack" >/dev/null)
ls -1 "$root"/pack/*.tgz
