#!/usr/bin/env bash
# Installs the reference restorer, CRIU 4.1.x from Debian 13 (trixie) packages, under
# /opt/criu-ref without touching the system's libraries: the packages are unpacked into a private
# root and the binary runs through trixie's own dynamic loader. Debian 12's criu 3.17 cannot start
# on kernels that map [vvar_vclock] (6.13+), hence this detour. crit (pure Python) runs on the
# system python3 with Debian 12's python3-protobuf.
#
# Usage: scripts/install-criu-ref.sh   (idempotent; CRIU_REF_PREFIX overrides /opt/criu-ref)
set -euo pipefail
prefix=${CRIU_REF_PREFIX:-/opt/criu-ref}
root=$prefix/root

if "$prefix/bin/criu" --version 2>/dev/null | grep -q '^Version: 4\.'; then
  echo "criu-ref: $("$prefix/bin/criu" --version | head -1) already at $prefix"
  exit 0
fi

case $(dpkg --print-architecture) in
  amd64) triplet=x86_64-linux-gnu; loader=usr/lib64/ld-linux-x86-64.so.2 ;;
  arm64) triplet=aarch64-linux-gnu; loader=usr/lib/ld-linux-aarch64.so.1 ;;
  *) echo "criu-ref: no reference CRIU for $(dpkg --print-architecture)" >&2; exit 1 ;;
esac

# Reuse the Debian mirror apt already points at (deb822 sources first, then sources.list).
mirror=$(grep -hoE '^URIs:[[:space:]]*[^[:space:]]+/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null |
  awk '{print $2; exit}')
[[ -n $mirror ]] || mirror=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[[ -n $mirror ]] || { echo "criu-ref: cannot find a Debian mirror in the apt sources" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/debs"
echo "deb $mirror trixie main" >"$tmp/sources.list"
apt=(apt-get -o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache::archives=$tmp/debs" -o APT::Sandbox::User=root)
"${apt[@]}" update -qq

# criu and the shared libraries it links, at their trixie versions.
debs=(criu python3-pycriu libc6 libbsd0 libmd0 libffi8 libgmp10 libgnutls30t64 libhogweed6t64 libnettle8t64
  libidn2-0 libunistring5 libp11-kit0 libtasn1-6 libjansson4 libmnl0 libnet1 libnftables1 libnftnl11
  libnl-3-200 libprotobuf-c1 libuuid1 libxtables12)
(cd "$tmp/debs" && "${apt[@]}" download -qq "${debs[@]}")

rm -rf "$root"
mkdir -p "$root" "$prefix/bin"
for deb in "$tmp"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done

printf '#!/bin/sh\nexec "%s" --library-path "%s" "%s" "$@"\n' \
  "$root/$loader" "$root/lib/$triplet:$root/usr/lib/$triplet" "$root/usr/sbin/criu" >"$prefix/bin/criu"

if ! python3 -c 'import google.protobuf' 2>/dev/null; then
  apt-get install -y -qq python3-protobuf >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq python3-protobuf >/dev/null; }
fi
printf '#!/bin/sh\nPYTHONPATH="%s${PYTHONPATH:+:$PYTHONPATH}" exec /usr/bin/python3 -m crit "$@"\n' \
  "$root/usr/lib/python3/dist-packages" >"$prefix/bin/crit"
chmod 755 "$prefix/bin/criu" "$prefix/bin/crit"

"$prefix/bin/criu" --version | head -1
"$prefix/bin/crit" --help >/dev/null
echo "criu-ref: installed at $prefix"
