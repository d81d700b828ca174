# Sourced by scripts/install (and meant for scripts/bootstrap.sh): the pinned uv that installs
# from the lock, uv.lock. uv lives in a small venv of its own: `uv sync` keeps a project's venv
# exactly as locked, so uv cannot live there. Nothing is downloaded but packages from the
# package index.

UV_VERSION=0.13.9

# is_pinned_uv FILE: whether FILE runs and is the pinned uv ("uv 0.13.9 (x86_64-...)").
is_pinned_uv() {
    case "$("$1" --version 2>/dev/null)" in
        "uv $UV_VERSION" | "uv $UV_VERSION "*) return 0 ;;
        *) return 1 ;;
    esac
}

# ensure_uv HOME PYTHON: the pinned uv at HOME/bin/uv, in a venv that PYTHON makes (with pip
# from the package index) unless it is there already.
ensure_uv() {
    local home=$1 python=$2
    is_pinned_uv "$home/bin/uv" && return 0
    echo "==> installing uv $UV_VERSION into $home"
    rm -rf "$home"
    "$python" -m venv "$home"
    "$home/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
}
