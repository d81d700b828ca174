# Sourced by scripts/test and scripts/demo: makes .venv and installs the project into it: the
# gateway (parking-gateway) and its hardware simulator (parking-sim, hardware-sim/), both
# editable. Safe to run again: it reinstalls only when a pyproject.toml changed since the last
# install.
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

# System packages the tests and the demo need (mosquitto for the sync tests; python3-venv for
# the venv). Installed with apt-get when missing and we may; otherwise a clear message.
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

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtual environment in $VENV"
    "${PARKING_GATEWAY_PYTHON:-$(find_python)}" -m venv "$VENV"
fi

projects=("$ROOT/pyproject.toml" "$ROOT/hardware-sim/pyproject.toml")
stamp="$VENV/.installed-$(cat "${projects[@]}" | sha256sum | cut -c1-16)-$EXTRAS"
if [ ! -f "$stamp" ]; then
    echo "==> installing parking-gateway[$EXTRAS] and parking-sim"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$ROOT[$EXTRAS]" -e "$ROOT/hardware-sim"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
