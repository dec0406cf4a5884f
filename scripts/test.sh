#!/usr/bin/env bash
# The whole test suite on a fresh Debian bookworm machine with a Swift 6 toolchain: installs what is missing,
# starts the local stack (Kafka API broker, Redis, PostgreSQL) on loopback, runs every test against it, and stops
# the servers it started (servers that were already running stay up).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

scripts/stack.sh install
# The fault suite's schemathesis scenario runs it over openapi.yaml.
scripts/chaos/schemathesis.sh install
# promtool checks analytics/alerts.yaml (Tests/ScoreboardAdapterTests/AlertRulesTests.swift).
scripts/ops/promtool.sh install
# scikit-learn in a venv: the IsolationForest baseline of `scoreboard fraud eval` (FraudEvaluationTests).
scripts/fraud/isolation-forest.sh install

# Remember what was down before, so that only what this run starts is stopped afterwards.
started=()
while read -r name state _; do
    [ "$state" = "down" ] && started+=("$name")
done < <(scripts/stack.sh status || true)
stop_started() { [ ${#started[@]} -eq 0 ] || scripts/stack.sh down "${started[@]}"; }
trap stop_started EXIT

SCOREBOARD_STACK_FOR_TESTS=1 scripts/stack.sh up
eval "$(scripts/stack.sh env)"

echo "[test] building (a cold build of the dependencies takes a few minutes)" >&2
swift build --build-tests "$@"
echo "[test] running tests" >&2
swift test --skip-build "$@"
