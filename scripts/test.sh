#!/usr/bin/env bash
# The test suite: what it needs beyond npm install (scripts/test-deps.sh: checked in a moment,
# installed when missing), Rust unit tests, then the ava suite under a child subreaper (restored
# process trees are orphans; see scripts/subreaper.c) with pseudo-terminals of its own
# (scripts/private-devpts.sh); then, for the whole suite (no arguments), the arm64 release in the
# arm64 guest (scripts/test-arm64.sh: the CI subset, about 10 minutes). Runs as root; fails if
# either part failed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh
bash scripts/build-test-programs.sh
npm run build:ts --silent  # tests run dist/cli.js; built once here, never while they run
cargo test --workspace --exclude tsdump-napi --quiet
status=0
bash scripts/private-devpts.sh build/subreaper npx ava "$@" || status=$?
if [ $# -eq 0 ]; then
  bash scripts/test-arm64.sh || status=$((status ? status : $?))
fi
exit "$status"
