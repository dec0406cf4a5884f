#!/usr/bin/env bash
# The fault suite of issue 9 (docs/reliability.md): real role processes under steady traffic, one fault per
# scenario, then a recount of every board from the accepted requests.
#
#   scripts/chaos.sh [--full] [--release] [scenario...]
#
# Scenarios: worker-sigkill rebuild sigterm redis postgres broker schemathesis (all by default).
# QUICK mode by default (the whole suite in about six minutes on two cores); --full runs a million events through
# the worker-kill scenario and keeps PostgreSQL down for two minutes. --release runs the role processes from a release
# build (`swift build -c release --product scoreboard`, about 18 minutes cold): the full runs need their speed.
#
# It sets up the local stack as scripts/test.sh does (stopping afterwards only what it started), installs
# schemathesis, builds, and runs the ChaosTests suite. Each scenario prints one line
#   chaos <name>: lost = N, duplicated = M, events accepted = X at Y/s, faults = F
# The role processes' logs go to .local/chaos/roles-<time>.log (the evidence when a scenario fails).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

mode=quick
release=no
tests=()
for argument in "$@"; do
    case "$argument" in
        --full) mode=full ;;
        --release) release=yes ;;
        worker-sigkill) tests+=(workerKilledEveryFewSeconds) ;;
        rebuild) tests+=(rebuildWhileTrafficFlows) ;;
        sigterm) tests+=(sigtermToEachRoleUnderLoad) ;;
        redis) tests+=(redisKilledAndRestarted) ;;
        postgres) tests+=(postgresRestartedInImmediateMode) ;;
        broker) tests+=(brokerKilledAndRestartedEmpty) ;;
        schemathesis) tests+=(schemathesisFindsNothing) ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown scenario $argument (see $0 --help)" >&2; exit 2 ;;
    esac
done
filter="ChaosTests"
if [ ${#tests[@]} -gt 0 ]; then filter="ChaosTests/($(IFS='|'; echo "${tests[*]}"))"; fi

scripts/stack.sh install
started=()
while read -r name state _; do
    [ "$state" = "down" ] && started+=("$name")
done < <(scripts/stack.sh status || true)
stop_started() { [ ${#started[@]} -eq 0 ] || scripts/stack.sh down "${started[@]}"; }
trap stop_started EXIT
scripts/stack.sh up
eval "$(scripts/stack.sh env)"
scripts/chaos/schemathesis.sh install

echo "[chaos] building" >&2
swift build --build-tests
if [ "$release" = yes ]; then
    echo "[chaos] building the release scoreboard for the role processes" >&2
    swift build -c release --product scoreboard
    export SCOREBOARD_ROLE_EXECUTABLE="$ROOT/.build/release/scoreboard"
fi
mkdir -p .local/chaos
log=".local/chaos/roles-$(date -u +%Y%m%dT%H%M%SZ).log"
echo "[chaos] running $filter in $mode mode; role logs in $log" >&2
export SCOREBOARD_CHAOS_MODE=$mode SCOREBOARD_TEST_ROLE_LOGS=1
# The roles' log lines (they start with a timestamp) and the test's report come out together: all of it goes to the
# file, the report (the `chaos …` lines and the test results) to the terminal.
swift test --skip-build --filter "$filter" 2>&1 | tee "$log" | grep --line-buffered -v '^20[0-9][0-9]-[0-9][0-9]-[0-9][0-9]T'
