#!/usr/bin/env bash
# Compiles the helpers the test suite runs: the subreaper wrapper and the C test targets in
# __test__/targets/. Outputs go to build/ (ignored by git). Rebuilds only what changed.
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
