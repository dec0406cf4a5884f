#!/usr/bin/env bash
# The IsolationForest baseline of `scoreboard fraud eval`: scikit-learn from PyPI in a venv under .local/.
#
#   scripts/fraud/isolation-forest.sh install
#       create .local/fraud-venv and install scikit-learn into it if it is missing
#   scripts/fraud/isolation-forest.sh run FEATURES.json
#       score the users in FEATURES.json (written by `scoreboard fraud eval`) and print the flagged users as JSON;
#       fails (non-zero, naming the cause) when the venv or scikit-learn is missing: it never installs silently
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${SCOREBOARD_FRAUD_VENV:-$ROOT/.local/fraud-venv}
PYTHON=${SCOREBOARD_PYTHON:-python3}

install() {
    "$VENV/bin/python" -c 'import sklearn' 2>/dev/null && return 0
    echo "[fraud] installing scikit-learn from PyPI into $VENV" >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check scikit-learn
}

case "${1:-}" in
    install) install ;;
    run)
        [ $# -eq 2 ] || { echo "usage: $0 run FEATURES.json" >&2; exit 2; }
        if ! "$VENV/bin/python" -c 'import sklearn' 2>/dev/null; then
            echo "[fraud] scikit-learn is not installed in $VENV: run '$0 install' first" >&2
            exit 3
        fi
        exec "$VENV/bin/python" "$ROOT/scripts/fraud/isolation_forest.py" "$2"
        ;;
    *) echo "usage: $0 install | run FEATURES.json" >&2; exit 2 ;;
esac
