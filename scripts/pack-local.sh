#!/usr/bin/env bash
# Packs tsdump the way it is published: the main package (JavaScript, no binary) and the
# per-platform package carrying this machine's .node, as pack/*.tgz. Installing both tarballs
# into an empty folder gives a working `npx tsdump` without a Rust toolchain.
#
# As napi-rs's prepublish step does, the per-platform packages are added to the packed
# package.json's optionalDependencies here rather than in the repository's, where they would
# put unpublished packages into package-lock.json.
#
# `pack-local.sh --target aarch64` (or x86_64) cross-compiles the other architecture's binary
# instead (rustup's rust-std for it and Debian's gcc-<arch>-linux-gnu as the linker) and writes
# only that platform package, into pack/cross/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

arch=$(uname -m)
cross=
if [ "${1:-}" = --target ]; then
  cross=${2:?--target needs x86_64 or aarch64}
  arch=$cross
fi
case "$arch" in
  x86_64) platform=linux-x64-gnu ;;
  aarch64) platform=linux-arm64-gnu ;;
  *) echo "pack-local: no platform package for $arch" >&2; exit 1 ;;
esac

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/main" "$stage/platform" pack

if [ -n "$cross" ]; then
  triple=$arch-unknown-linux-gnu
  linker_var=CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_LINKER
  export "$linker_var=$arch-linux-gnu-gcc"
  # the generated loader and types stay in the stage: native/ keeps this machine's
  npx napi build --platform --release --target "$triple" --manifest-path crates/napi/Cargo.toml \
    --package-json-path package.json --output-dir "$stage/cross" --no-js --dts index.d.ts >/dev/null
  cp -r "npm/$platform/." "$stage/platform/"
  cp "$stage/cross/tsdump.$platform.node" "$stage/platform/"
  mkdir -p pack/cross
  rm -f pack/cross/*.tgz
  (cd "$stage/platform" && npm pack --ignore-scripts --pack-destination "$root/pack/cross" >/dev/null)
  ls -1 "$root"/pack/cross/*.tgz
  exit 0
fi

binary="native/tsdump.$platform.node"
# The binary is built only when missing: packing must not need Rust when a binary exists.
[ -f "$binary" ] || npm run build:native
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
cp -r "npm/$platform/." "$stage/platform/"
cp "$binary" "$stage/platform/"

(cd "$stage/main" && npm pack --ignore-scripts --pack-destination "$root/pack" >/dev/null)
(cd "$stage/platform" && npm pack --ignore-scripts --pack-destination "$root/pack" >/dev/null)
ls -1 "$root"/pack/*.tgz
