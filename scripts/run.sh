#!/usr/bin/env bash
# The main job on a fresh Debian bookworm machine with a Swift 6 toolchain: installs what is missing, starts the
# local stack, builds `scoreboard` (release), creates the declared topics, applies migrations, checks every server
# with `scoreboard doctor`, then runs the system: `scoreboard dev` (gateway, worker and push in one process) prints
# the URLs and a demo token and runs until Ctrl-C. The stack stays up; `scripts/stack.sh down` stops it.
# SCOREBOARD_RUN_CHECK_ONLY=1 stops after the doctor (for scripted checks of a fresh machine).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

scripts/stack.sh install
scripts/stack.sh up
eval "$(scripts/stack.sh env)"

echo "[run] building scoreboard in release mode (a cold build takes several minutes)" >&2
swift build -c release --product scoreboard
BIN="$(swift build -c release --show-bin-path)/scoreboard"

echo "[run] scoreboard topics apply" >&2
"$BIN" topics apply
echo "[run] scoreboard migrate" >&2
"$BIN" migrate
echo "[run] scoreboard doctor" >&2
"$BIN" doctor
if [ "${SCOREBOARD_RUN_CHECK_ONLY:-}" = 1 ]; then
    echo "[run] the stack is running; stop it with: scripts/stack.sh down" >&2
    exit 0
fi
echo "[run] scoreboard dev (Ctrl-C stops the roles; the stack stays up: scripts/stack.sh down)" >&2
export SCOREBOARD_KAFKA_SESSION_TIMEOUT_MS="${SCOREBOARD_KAFKA_SESSION_TIMEOUT_MS:-4000}"
exec "$BIN" dev
