#!/usr/bin/env bash
# The benchmark, in one command (from the repository root):
#
#   bash tests/bench/run.sh              # full run, 5 s per cell (~8 minutes)
#   bash tests/bench/run.sh --quick      # smoke run, 1 s per cell (~1 minute)
#   bash tests/bench/run.sh --duration 10
#   bash tests/bench/run.sh --profile    # the gateway alone under py-spy, 2 KB json and stream at c=32
#   bash tests/bench/run.sh --limits     # issue 15: what rate limits cost (tests/bench/limits_bench.py, ~8 min)
#
# Other options go to the driver (see `--help`), e.g. --targets model-gateway
# (of model-gateway, model-gateway+budget, litellm-proxy), --bodies 2KB,
# --concurrency 32, --modes stream (of json, stream, stream100), --no-pin,
# --doors chat,messages,responses (the gateway's front doors, issue 14).
#
# It installs what it needs and skips what is already there: wrk (Debian
# package), and LiteLLM Proxy 1.108.7 into its own virtual environment
# .bench/litellm-venv (never into the project's .venv). Then it runs
# tests/bench/driver.py with the project's Python (.venv). Results: stdout,
# .bench/results.md and .bench/results.json; process logs in .bench/logs/.
#
# --profile runs tests/bench/profile_gateway.py instead (options after it go
# there, see `run.sh --profile --help`): it installs py-spy into its own
# virtual environment .bench/tools-venv (not LiteLLM), and writes
# .bench/profile/<load>.{collapsed,txt,svg}.
#
# --limits runs tests/bench/limits_bench.py instead (options after it go there, see `run.sh --limits --help`;
# with --profile CONFIG it installs py-spy as above and profiles that configuration's gateway). It needs the
# machine's PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379), not LiteLLM.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT="$PWD"
BENCH="$ROOT/.bench"
LITELLM_VERSION="1.108.7" # newest whose [proxy] extra installs here; 1.82.7 and 1.82.8 were compromised: never those
LITELLM_VENV="$BENCH/litellm-venv"
PROJECT_PY="$ROOT/.venv/bin/python"
PY_SPY_VERSION="0.4.3"
TOOLS_VENV="$BENCH/tools-venv"

LIMITS=0
for arg in "$@"; do
    if [[ "$arg" == "--limits" ]]; then LIMITS=1; fi
done
PROFILE=0
args=()
for arg in "$@"; do
    if [[ "$arg" == "--limits" ]]; then
        continue
    elif [[ "$arg" == "--profile" ]]; then
        PROFILE=1
        if [[ $LIMITS -eq 1 ]]; then args+=("$arg"); fi # limits_bench.py's own: --profile CONFIG
    else
        args+=("$arg")
    fi
done
set -- ${args[@]+"${args[@]}"}
SCRIPT="tests/bench/driver.py"
if [[ $PROFILE -eq 1 ]]; then SCRIPT="tests/bench/profile_gateway.py"; fi
if [[ $LIMITS -eq 1 ]]; then SCRIPT="tests/bench/limits_bench.py"; fi

for arg in "$@"; do
    if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then
        exec "$PROJECT_PY" "$SCRIPT" --help
    fi
done

if [[ ! -x "$PROJECT_PY" ]] || ! "$PROJECT_PY" -c 'import gateway, uvloop' 2>/dev/null; then
    echo "bench: the project's .venv is missing or incomplete; run 'bash scripts/setup' first" >&2
    exit 2
fi

if ! command -v wrk >/dev/null 2>&1; then
    echo "bench: installing wrk (Debian package)" >&2
    if [[ $(id -u) -eq 0 ]]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
if ! command -v taskset >/dev/null 2>&1; then
    echo "bench: taskset (util-linux) not found: processes will not be pinned to cores" >&2
fi

mkdir -p "$BENCH"
if [[ $PROFILE -eq 1 ]]; then
    if [[ ! -x "$TOOLS_VENV/bin/py-spy" ]] || [[ "$("$TOOLS_VENV/bin/py-spy" --version 2>/dev/null)" != "py-spy $PY_SPY_VERSION" ]]; then
        echo "bench: installing py-spy==$PY_SPY_VERSION into $TOOLS_VENV" >&2
        rm -rf "$TOOLS_VENV"
        BASE_PY="$("$PROJECT_PY" -c 'import sys; print(sys._base_executable)')"
        "$BASE_PY" -m venv "$TOOLS_VENV"
        "$TOOLS_VENV/bin/pip" install -q --disable-pip-version-check "py-spy==$PY_SPY_VERSION" >"$BENCH/tools-install.log" 2>&1 || {
            tail -20 "$BENCH/tools-install.log" >&2
            echo "bench: installing py-spy failed (see $BENCH/tools-install.log); --cprofile works without it" >&2
        }
    fi
    exec "$PROJECT_PY" "$SCRIPT" "$@"
fi
if [[ $LIMITS -eq 1 ]]; then exec "$PROJECT_PY" "$SCRIPT" "$@"; fi
have_litellm() {
    [[ -x "$LITELLM_VENV/bin/litellm" ]] &&
        [[ "$("$LITELLM_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null)" == "$LITELLM_VERSION" ]]
}
# LiteLLM is installed only when it runs: --targets without litellm-proxy needs none.
wants_litellm() {
    local prev="" arg
    for arg in "$@"; do
        if [[ "$prev" == "--targets" ]]; then [[ "$arg" == *litellm-proxy* ]] && return 0 || return 1; fi
        if [[ "$arg" == --targets=* ]]; then [[ "$arg" == *litellm-proxy* ]] && return 0 || return 1; fi
        prev="$arg"
    done
    return 0 # the default targets include it
}
if wants_litellm "$@" && ! have_litellm; then
    echo "bench: installing litellm[proxy]==$LITELLM_VERSION into $LITELLM_VENV (log: $BENCH/litellm-install.log)" >&2
    rm -rf "$LITELLM_VENV"
    BASE_PY="$("$PROJECT_PY" -c 'import sys; print(sys._base_executable)')"
    "$BASE_PY" -m venv "$LITELLM_VENV"
    if ! { "$LITELLM_VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip &&
        "$LITELLM_VENV/bin/pip" install -q --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION"; } \
        >"$BENCH/litellm-install.log" 2>&1; then
        tail -20 "$BENCH/litellm-install.log" >&2
        echo "bench: installing LiteLLM failed (see $BENCH/litellm-install.log)" >&2
        rm -rf "$LITELLM_VENV"
        exit 1
    fi
fi

exec "$PROJECT_PY" tests/bench/driver.py "$@"
