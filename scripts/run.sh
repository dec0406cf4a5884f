#!/usr/bin/env bash
# The main job on a fresh Debian bookworm machine with a Swift 6 toolchain: installs what is missing, starts the
# local stack, builds `scoreboard` (release), creates the declared topics, applies migrations and checks every
# server with `scoreboard doctor`. The stack stays up for you; `scripts/stack.sh down` stops it.
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
echo "[run] the stack is running; stop it with: scripts/stack.sh down" >&2
