#!/bin/sh
# Install gcomp's build and test dependencies on Debian 12 (apt). Installs only what is
# missing; needs root (or sudo). CUDA and NCCL are optional and not installed here.
set -eu
# Tests only: slurm-wlm and munge (a real Slurm cluster in test_slurm), python3-torch
# (torch.distributed under gcomp-run), python3-matplotlib (gcomp-plot), python3-yaml (the
# Kubernetes manifests' checks).
PKGS="gcc pkg-config meson ninja-build openmpi-bin libopenmpi-dev libucx-dev ucx-utils
libprotobuf-c-dev protobuf-c-compiler libuv1-dev libcmocka-dev libopenblas-dev liblapacke-dev
python3 python3-numpy python3-pytest procps iproute2 util-linux
slurm-wlm munge python3-torch python3-matplotlib python3-yaml"
missing=""
for p in $PKGS; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing$missing" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo for:$missing" >&2; exit 1; }
    SUDO=sudo
fi
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
