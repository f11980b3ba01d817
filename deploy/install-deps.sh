#!/bin/sh
# Install gcomp's build and test dependencies on Debian 12 (apt). Installs only what is
# missing; needs root (or sudo). CUDA and NCCL are optional and not installed here.
# PyTorch, matplotlib and Fashion-MNIST (/usr/share/datasets/fashion-mnist) are for
# gcomp.torch's tests and the experiment; venv, pip, setuptools and wheel for the test
# that pip-installs the Python package.
set -eu
PKGS="gcc pkg-config meson ninja-build openmpi-bin libopenmpi-dev libucx-dev ucx-utils
libprotobuf-c-dev protobuf-c-compiler libuv1-dev libcmocka-dev libopenblas-dev liblapacke-dev
python3 python3-numpy python3-pytest procps iproute2 util-linux
python3-torch python3-matplotlib python3-venv python3-pip python3-setuptools python3-wheel
dataset-fashion-mnist"
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
