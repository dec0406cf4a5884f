#!/usr/bin/env bash
# promtool, the checker of Prometheus rules, for the tests of analytics/alerts.yaml.
#
#   scripts/ops/promtool.sh install    put promtool at .local/tools/promtool if it is missing
#   scripts/ops/promtool.sh test       check analytics/alerts.yaml and run its unit tests (analytics/alerts.test.yaml)
#
# promtool comes from Debian's `prometheus` package: its .deb is downloaded (no root needed) and only promtool, a
# static binary, is taken out of it. Installing the package itself would also install and try to start a
# Prometheus server, which this machine does not need.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS="$ROOT/.local/tools"
PROMTOOL="$TOOLS/promtool"

install_promtool() {
    [ -x "$PROMTOOL" ] && return 0
    echo "[promtool] downloading Debian's prometheus package for its promtool" >&2
    local work
    work=$(mktemp -d)
    trap 'rm -rf "$work"' RETURN
    (cd "$work" && apt-get download -qq prometheus >/dev/null 2>&1) || {
        # A fresh machine may not have read the package lists yet.
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -qq >/dev/null
        (cd "$work" && apt-get download -qq prometheus >/dev/null)
    }
    dpkg-deb -x "$work"/prometheus_*.deb "$work/extracted"
    mkdir -p "$TOOLS"
    install -m 0755 "$work/extracted/usr/bin/promtool" "$PROMTOOL"
    "$PROMTOOL" --version 2>&1 | head -1 >&2
}

case "${1:-}" in
    install) install_promtool ;;
    test)
        install_promtool
        "$PROMTOOL" check rules "$ROOT/analytics/alerts.yaml"
        cd "$ROOT/analytics" && "$PROMTOOL" test rules alerts.test.yaml
        ;;
    *) echo "usage: $0 install|test" >&2; exit 2 ;;
esac
