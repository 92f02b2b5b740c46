#!/usr/bin/env bash
# The test suite: Rust unit tests, then the ava suite under a child subreaper (restored process
# trees are orphans; see scripts/subreaper.c). Needs root and the reference CRIU
# (scripts/install-criu-ref.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-test-programs.sh
npm run build:ts --silent  # tests run dist/cli.js; built once here, never while they run
cargo test --workspace --exclude tsdump-napi --quiet
exec build/subreaper npx ava "$@"
