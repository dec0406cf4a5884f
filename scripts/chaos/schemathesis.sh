#!/usr/bin/env bash
# schemathesis (PyPI) over openapi.yaml against a running server, with every check.
#
#   scripts/chaos/schemathesis.sh install
#       install schemathesis for python3 if it is missing (Debian's python3 needs --break-system-packages)
#   scripts/chaos/schemathesis.sh run URL MAX_EXAMPLES [schemathesis options...]
#       run it; the exit status is schemathesis's (non-zero when a check failed). Each `-H 'Authorization: Bearer …'`
#       given in the options is sent with every request (one run per token role: the caller runs it once per token).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${SCOREBOARD_PYTHON:-python3}

install() {
    "$PYTHON" -c 'import schemathesis' 2>/dev/null && return 0
    echo "[schemathesis] installing from PyPI" >&2
    "$PYTHON" -m pip install -q schemathesis 2>/dev/null || "$PYTHON" -m pip install -q --break-system-packages schemathesis
}

case "${1:-}" in
    install) install ;;
    run)
        shift
        [ $# -ge 2 ] || { echo "usage: $0 run URL MAX_EXAMPLES [options...]" >&2; exit 2; }
        url=$1 examples=$2; shift 2
        install
        # No colour: the output goes into a test's failure message. No example database: nothing is left in the checkout.
        export NO_COLOR=1
        # schemathesis keeps its crash files under the working folder: not in the checkout.
        work="${TMPDIR:-/tmp}/scoreboard-schemathesis"
        mkdir -p "$work" && cd "$work"
        exec "$PYTHON" -m schemathesis.cli --no-color run "$ROOT/openapi.yaml" --url "$url" --checks all \
            --max-examples "$examples" --seed 9 --request-timeout 10 --generation-database none "$@"
        ;;
    *) echo "usage: $0 install | run URL MAX_EXAMPLES [options...]" >&2; exit 2 ;;
esac
