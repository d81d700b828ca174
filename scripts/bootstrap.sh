# Sourced by scripts/test and scripts/demo: makes .venv and installs the project into it from the
# lock (uv.lock): the gateway (parking-gateway) and its hardware simulator (parking-sim,
# hardware-sim/), both editable, with exactly the locked versions of everything else. Safe to run
# again: `uv sync` changes nothing when the venv already matches the lock, and it fails when
# pyproject.toml no longer matches uv.lock (run scripts/upgrade-deps, or `uv lock`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PARKING_GATEWAY_VENV:-$ROOT/.venv}"
EXTRAS="${PARKING_GATEWAY_EXTRAS:-dev,sim,lpr,train}"
# PARKING_GATEWAY_PYTHON names the interpreter of a new venv (default: the newest 3.11+ on PATH).

find_python() {
    for py in python3.13 python3.12 python3.11 python3; do
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$py"
            return 0
        fi
    done
    echo "error: Python 3.11 or newer is required" >&2
    return 1
}

# System packages the tests and the demo need (mosquitto: the demo's backend and the sync
# tests' broker; python3-venv for the venv; scripts/test adds the tests' own). Installed with
# apt-get when missing and we may; otherwise a clear message.
apt_install() {
    local missing=()
    for spec in "$@"; do
        local cmd="${spec%%:*}" pkg="${spec##*:}"
        command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo -n"
    if [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; then
        echo "==> apt-get install ${missing[*]}"
        $sudo apt-get update -qq >/dev/null || true
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    else
        echo "warning: missing system packages: ${missing[*]} (install them with apt-get)" >&2
    fi
}
apt_install mosquitto:mosquitto

# uv, pinned (scripts/uv.sh), in a small venv of its own: .tools/uv.
source "$ROOT/scripts/uv.sh"
UV_HOME="$ROOT/.tools/uv"
ensure_uv "$UV_HOME" "$(find_python)"

extras=()
IFS=, read -ra wanted <<<"$EXTRAS"
for extra in "${wanted[@]}"; do [ -n "$extra" ] && extras+=(--extra "$extra"); done
echo "==> uv sync --locked (${EXTRAS:-no extras}) into $VENV"
UV_PROJECT_ENVIRONMENT="$VENV" UV_PYTHON_DOWNLOADS=never "$UV_HOME/bin/uv" sync -q --locked \
    --project "$ROOT" --all-packages "${extras[@]}" \
    --python "${PARKING_GATEWAY_PYTHON:-$(find_python)}"
export PATH="$VENV/bin:$PATH"
