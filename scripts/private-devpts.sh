#!/usr/bin/env bash
# Runs CMD in a mount namespace of its own whose /dev/pts is a new devpts instance, so the
# pseudo-terminals the tests open are numbered from 0 among themselves whatever terminals the
# rest of the machine holds: CRIU restores a pty pair only at the index it was dumped with
# (pty.ts), which a terminal opened elsewhere meanwhile would take. Mounts made inside go away
# with the namespace.
#
# Usage: scripts/private-devpts.sh CMD [ARG...]   (as root)
set -euo pipefail
exec unshare --mount --propagation private -- bash -c '
  set -e
  mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /dev/pts
  mount --bind /dev/pts/ptmx /dev/ptmx
  exec "$@"' private-devpts "$@"
