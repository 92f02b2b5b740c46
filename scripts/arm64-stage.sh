# Sourced by scripts/test-arm64.sh and bench/arm64.sh: what both need to run tsdump in the arm64
# guest (the shared tools' arm64-vm: a Debian 13 arm64 kernel under qemu, with its own node and
# criu 4.1.1).
#
# arm64_vm            prints the path of arm64-vm (ARM64_VM, or tools/arm64-vm in the shared
#                     directory beside the checkout)
# arm64_stage OUT     packs the main package and the linux-arm64-gnu platform package
#                     (scripts/pack-local.sh), installs them with npm as for an arm64 Linux machine
#                     (npm picks the platform package by cpu, os and libc, as it would there),
#                     cross-builds the C test targets and the subreaper, compiles the guest-side
#                     runner (__test__/arm64/guest.ts) and the catalogue helpers it uses, and tars
#                     it all into OUT/guest.tar: one file over 9p, unpacked into the guest's tmpfs
#                     (many small reads over 9p are slow).
# Needs gcc-aarch64-linux-gnu and libc6-dev-arm64-cross (the C targets), and what pack-local.sh
# needs (cargo-zigbuild, ziglang, rustup's aarch64 target).

arm64_vm() {
  local root=$PWD c
  for c in "${ARM64_VM:-}" "$root/../shared/tools/arm64-vm" "$root/../../shared/tools/arm64-vm"; do
    if [ -n "$c" ] && [ -x "$c" ]; then
      echo "$c"
      return 0
    fi
  done
  echo "arm64: no arm64-vm (set ARM64_VM, or have the shared tools beside the checkout)" >&2
  return 1
}

arm64_stage() {
  local out=$1 root=$PWD version stage
  command -v aarch64-linux-gnu-gcc >/dev/null || {
    echo "arm64: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross" >&2
    return 1
  }
  version=$(node -p 'require("./package.json").version')
  bash scripts/pack-local.sh >/dev/null
  bash scripts/pack-local.sh --target aarch64 >/dev/null

  stage=$out/stage
  rm -rf "$out"
  mkdir -p "$stage/build/targets" "$stage/__test__/programs" "$stage/bench"
  # The platform package is on no registry: the override points npm at its tarball.
  cat > "$stage/package.json" <<EOF
{ "name": "tsdump-arm64-guest", "private": true, "type": "module",
  "overrides": { "tsdump-linux-arm64-gnu": "file:$root/pack/cross/tsdump-linux-arm64-gnu-$version.tgz" } }
EOF
  (cd "$stage" && npm install --no-audit --no-fund --no-save --cpu=arm64 --os=linux --libc=glibc \
    "$root/pack/tsdump-$version.tgz" >/dev/null)
  [ -f "$stage/node_modules/tsdump-linux-arm64-gnu/tsdump.linux-arm64-gnu.node" ] || {
    echo "arm64: npm did not install the arm64 platform package" >&2
    return 1
  }
  # the installed tree is the guest's: no host binary in it
  ! ls "$stage"/node_modules/tsdump-linux-x64-* >/dev/null 2>&1 || { echo "arm64: npm installed an x64 package" >&2; return 1; }

  npx tsc -p __test__/arm64/tsconfig.json --outDir "$stage"
  cp __test__/programs/*.py "$stage/__test__/programs/"
  cp bench/arm64-guest.mjs "$stage/bench/"
  local cflags=(-O1 -g -Wall -Wextra -Werror -D_GNU_SOURCE) src name
  aarch64-linux-gnu-gcc "${cflags[@]}" -o "$stage/build/subreaper" scripts/subreaper.c
  for src in __test__/targets/*.c; do
    name=$(basename "$src" .c)
    # t_seccomp filters x86_64 syscall numbers (see NOT_ON_ARM64 in guest.ts)
    [ "$name" = t_seccomp ] && continue
    aarch64-linux-gnu-gcc "${cflags[@]}" -o "$stage/build/targets/$name" "$src" -pthread -lrt
  done
}

# arm64_pack_stage OUT: OUT/guest.tar from OUT/stage (after anything else was added to it).
arm64_pack_stage() {
  tar -C "$1/stage" -cf "$1/guest.tar" .
}
