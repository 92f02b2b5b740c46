#!/usr/bin/env bash
# `npm run test:arm64 [-- [--pac] [all | NAME...]]`: the arm64 release, run for real. Builds and
# installs the packed arm64 packages as an arm64 user would (scripts/arm64-stage.sh), builds
# tsdump-core's unit tests for aarch64, and boots the arm64 guest. Inside: the core's unit tests
# (injection, return frames, the resident parasite and its cure on tsdump's death), then catalogue
# subjects (__test__/arm64/guest.ts), dumped by the installed tsdump and restored by the guest's
# criu 4.1.1: by default CI_SUBSET there (issue 13's twelve programs, a Python TCP service, the
# 32-bit refusal; what `npm test` runs), `all` for every subject that makes sense on arm64, or
# the subjects named. Prints "arm64: N passed, M failed".
#
# --pac boots a CPU with pointer authentication (ARM64_VM_CPU=max,pauth-impdef=on) and checks
# the PAC keys tsdump records against the guest criu's instead (criu 4.1.1's restore hangs
# restoring them under this qemu, so there is no round trip with PAC on).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/arm64-stage.sh
vm=$(arm64_vm)

for a in "$@"; do
  if [ "$a" = --pac ]; then export ARM64_VM_CPU=${ARM64_VM_CPU:-max,pauth-impdef=on}; fi
done
# Not arm64-vm's default `max` CPU: under it (qemu 7.2, TCG) Debian's node died inside V8 ("Check
# failed: index < length()" in a feedback vector) in about one tsdump dump of fifteen, and once
# with SIGILL; never in 32 dumps on neoverse-n1 or cortex-a72, nor with node --jitless.
export ARM64_VM_CPU=${ARM64_VM_CPU:-neoverse-n1}
# python3: the Python subjects
export ARM64_VM_PACKAGES=${ARM64_VM_PACKAGES-nodejs criu python3}
# the MPTCP socket diag (tsdump-core's tests list MPTCP listeners through it)
export ARM64_VM_MODULES=${ARM64_VM_MODULES-mptcp_diag}
export ARM64_VM_TIMEOUT=${ARM64_VM_TIMEOUT:-1800}

out=build/arm64
arm64_stage "$out"
# tsdump-core's unit tests, linked like the release (glibc 2.17 baseline)
tests=$(cargo-zigbuild test -p tsdump-core --no-run --target aarch64-unknown-linux-gnu.2.17 --message-format=json 2>"$out/core-tests.log" |
  node -e 'let s="";process.stdin.on("data",(d)=>(s+=d)).on("end",()=>{for(const l of s.split("\n")){try{const m=JSON.parse(l);if(m.executable&&m.target.kind.includes("lib"))console.log(m.executable)}catch{}}})') || true
[ -n "$tests" ] || {
  tail -n 40 "$out/core-tests.log" >&2
  echo "test-arm64: building tsdump-core's tests failed (cargo-zigbuild test -p tsdump-core --no-run --target aarch64-unknown-linux-gnu.2.17)" >&2
  exit 1
}
cp "$tests" "$out/stage/build/core-tests"
arm64_pack_stage "$out"

cat > "$out/run.sh" <<'EOF'
set -e
mkdir /tmp/t && tar -xf /host/guest.tar -C /tmp/t && cd /tmp/t
# the guest's own criu restores (the catalogue helpers default to the host's reference build)
export TSDUMP_CRIU=$(command -v criu)
exec build/subreaper node __test__/arm64/guest.js --core-tests build/core-tests "$@"
EOF
cmd="sh run.sh"
[ $# -eq 0 ] || cmd+=$(printf ' %q' "$@")
exec "$vm" run "$out" "$cmd"
