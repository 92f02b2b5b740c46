#!/usr/bin/env bash
# The test suite: what it needs beyond npm install (scripts/test-deps.sh: checked in a moment,
# installed when missing), Rust unit tests, then the ava suite under a child subreaper (restored
# process trees are orphans; see scripts/subreaper.c) with pseudo-terminals of its own
# (scripts/private-devpts.sh). Runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh
bash scripts/build-test-programs.sh
npm run build:ts --silent  # tests run dist/cli.js; built once here, never while they run
cargo test --workspace --exclude tsdump-napi --quiet
exec bash scripts/private-devpts.sh build/subreaper npx ava "$@"
