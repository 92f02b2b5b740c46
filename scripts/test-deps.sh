#!/usr/bin/env bash
# What the test suite needs beyond `npm install`, checked in well under a second and installed
# (as root) when missing. scripts/test.sh runs it first, so `npm test` passes on a fresh machine
# by itself; .ci/run installs nothing else.
#
#   Debian packages: redis-server and python3 (catalogue targets), python3-protobuf (the reference
#     crit), iptables (--tcp-established locks connections with it, criu restore unlocks),
#     gcc-aarch64-linux-gnu and libc6-dev-arm64-cross (the aarch64 parasite and the
#     cross-compiled linux-arm64-gnu package of pack.test.ts), time (/usr/bin/time -v),
#     chromium (report.test.ts opens the HTML report in it), groff-base (the man page's check),
#     postgresql-15 (the catalogue's PostgreSQL subject: SysV shared memory, a held connection);
#     openssl (page-server-tls.test.ts makes its CA, certificates and CRL with it);
#   rustup's aarch64-unknown-linux-gnu standard library (the same cross build, and clippy's);
#   the reference CRIU 4.1.1 under /opt/criu-ref (scripts/install-criu-ref.sh).
#
# Usage: scripts/test-deps.sh   (as root, as the tests; idempotent, silent when nothing is missing)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(gcc libc6-dev python3 python3-protobuf redis-server iptables time gcc-aarch64-linux-gnu libc6-dev-arm64-cross chromium groff-base postgresql-15 openssl musl
  qemu-system-arm cpio kmod xz-utils debian-archive-keyring)
rust_targets=(aarch64-unknown-linux-gnu x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
pypi=(ziglang==0.17.1 cargo-zigbuild==0.24.1)
criu=${TSDUMP_CRIU:-/opt/criu-ref/bin/criu}

if [[ $EUID -ne 0 ]]; then
  echo "npm test: the tests need root (ptrace, namespaces, criu restore): run it as root" >&2
  exit 1
fi
if [[ ! -e node_modules/.package-lock.json ]] || ! compgen -G 'native/tsdump.*.node' >/dev/null; then
  echo "npm test: this checkout is not built: run npm install first" >&2
  exit 1
fi
if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
  echo "npm test: cargo and rustc are not on PATH (the Rust tests and the cross build need them): add rustup's ~/.cargo/bin to PATH" >&2
  exit 1
fi

missing_pkgs=()
while read -r pkg status; do
  [[ $status == installed ]] || missing_pkgs+=("$pkg")
done < <(for p in "${packages[@]}"; do
  printf '%s %s\n' "$p" "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || echo absent)"
done)
missing_targets=()
for t in "${rust_targets[@]}"; do
  [[ -d $(rustc --print sysroot)/lib/rustlib/$t ]] || missing_targets+=("$t")
done
missing_pypi=()
command -v cargo-zigbuild >/dev/null && command -v python-zig >/dev/null || missing_pypi=("${pypi[@]}")
missing_criu=
"$criu" --version 2>/dev/null | grep -q '^Version: 4\.' || missing_criu="CRIU 4.1 ($criu)"

missing=("${missing_pkgs[@]}" "${missing_targets[@]}" "${missing_pypi[@]}" ${missing_criu:+"$missing_criu"})
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "npm test: installing what the tests need: ${missing[*]}" >&2
if [[ ${#missing_pkgs[@]} -gt 0 ]]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null
fi
[[ ${#missing_targets[@]} -eq 0 ]] || rustup target add "${missing_targets[@]}"
if [[ ${#missing_pypi[@]} -gt 0 ]]; then
  python3 -m pip install -q "${missing_pypi[@]}"
  ! command -v pyenv >/dev/null || pyenv rehash
fi
[[ -z $missing_criu ]] || bash scripts/install-criu-ref.sh
