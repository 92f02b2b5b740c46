#!/usr/bin/env bash
# The arm64 dump bench (not a test): the packed arm64 tsdump against the arm64 guest's own criu
# 4.1.1 on the x86_64 bench shapes (idle, 256 MiB, 100 processes, 200 threads); prints ratios
# only, the guest's CPU being emulated. See bench/arm64-guest.mjs for the method.
#
#   bash bench/arm64.sh [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/arm64-stage.sh
vm=$(arm64_vm)
export ARM64_VM_PACKAGES=${ARM64_VM_PACKAGES-nodejs criu python3}
export ARM64_VM_TIMEOUT=${ARM64_VM_TIMEOUT:-3600}
# the CPU test-arm64.sh boots, for the reason given there
export ARM64_VM_CPU=${ARM64_VM_CPU:-neoverse-n1}
out=build/arm64-bench
arm64_stage "$out"
arm64_pack_stage "$out"
cat > "$out/run.sh" <<'SH'
set -e
mkdir /tmp/t && tar -xf /host/guest.tar -C /tmp/t && cd /tmp/t
# the guest's own criu restores (the catalogue helpers default to the host's reference build)
export TSDUMP_CRIU=$(command -v criu)
exec build/subreaper node bench/arm64-guest.mjs "$@"
SH
exec "$vm" run "$out" "sh run.sh ${1:-3}"
