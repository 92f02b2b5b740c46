#!/usr/bin/env bash
# npm's `prepare`: `npm install` (and `npm ci`) in this checkout build tsdump, the Rust core and
# the TypeScript.
#
# npx runs `prepare` too, whenever it sets `npx tsdump` up from this checkout (it links the
# checkout into its cache; npm_command=exec): the README's `sudo npx tsdump dump ...` would
# rebuild everything before the first run, as root in the user's tree, with sudo's PATH where
# cargo is not, and a failed build leaves npx's cache broken for every later run. The checkout
# is built by npm install; npx only needs to link it, so under npx nothing is built.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${npm_command:-} == exec ]]; then
  if [[ ! -f dist/cli.js ]]; then
    # npx shows a lifecycle script's output only when it fails, and failing here would leave
    # its cache without this package: say it on the terminal
    msg="tsdump: $PWD is not built yet: run npm install there first"
    { echo "$msg" >/dev/tty; } 2>/dev/null || echo "$msg" >&2
  fi
  exit 0
fi
exec npm run build
