#!/usr/bin/env bash
# Compiles the helpers the test suite runs: the subreaper wrapper, the C test targets in
# __test__/targets/ and the Go one (__test__/targets/go_http, a Go >= 1.24 HTTP server). Outputs
# go to build/ (ignored by git). Rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build/targets
cflags=(-O1 -g -Wall -Wextra -Werror -D_GNU_SOURCE)

build() { # out src [extra flags...]
  local out=$1 src=$2; shift 2
  if [[ ! -x $out || $src -nt $out || __test__/targets/common.h -nt $out ]]; then
    gcc "${cflags[@]}" -o "$out" "$src" "$@"
  fi
}

build build/subreaper scripts/subreaper.c
# LD_PRELOAD shim letting the reference CRIU dump inet sockets here (see the file; dump-tcp.test.ts)
build build/passcred_off.so __test__/shims/passcred_off.c -shared -fPIC -ldl
shopt -s nullglob
for src in __test__/targets/*.c; do
  name=$(basename "$src" .c)
  build "build/targets/$name" "$src" -pthread -lrt
done

# Go >= 1.24: its net.Listen("tcp") opens MPTCP sockets, the point of this subject. The toolchain
# that is here is used as it is (GOTOOLCHAIN=local: no download of another one).
go_src=__test__/targets/go_http
go_out=build/targets/go_http
go=$(command -v go || true)
[[ -z $go && -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go
if [[ -z $go ]]; then
  echo "build-test-programs: no Go toolchain (go not on PATH nor in /usr/local/go/bin): the go_http test subject needs Go >= 1.24" >&2
  exit 1
fi
if [[ ! -x $go_out || -n $(find "$go_src" -newer "$go_out" -type f) ]]; then
  go_version=$(GOTOOLCHAIN=local "$go" env GOVERSION)
  if [[ ! $go_version =~ ^go1\.([0-9]+) ]] || (( BASH_REMATCH[1] < 24 )); then
    echo "build-test-programs: $go is $go_version; the go_http test subject needs Go >= 1.24" >&2
    exit 1
  fi
  (cd "$go_src" && GOTOOLCHAIN=local GOFLAGS=-mod=mod "$go" build -trimpath -o "$OLDPWD/$go_out" .)
fi
