#!/bin/sh
# Install gcomp's build and test dependencies on Debian 12 (apt). Installs only what is
# missing; needs root (or sudo). CUDA and NCCL are optional and not installed here.
#   deploy/install-deps.sh               what building and every test need (also the
#                                        sanitized test: deploy/dev.sh test --sanitize)
#   deploy/install-deps.sh --build-only  what building needs (deploy/Dockerfile)
#   deploy/install-deps.sh --fuzz VENV   also clang with libFuzzer, and atheris (from PyPI)
#                                        in the Python virtual environment VENV
#                                        (deploy/dev.sh fuzz)
set -eu
BUILD_PKGS="gcc pkg-config meson ninja-build openmpi-bin libopenmpi-dev libucx-dev
libprotobuf-c-dev protobuf-c-compiler libuv1-dev libopenblas-dev liblapacke-dev python3"
# The tests: cmocka (unit), slurm-wlm and munge (a real Slurm cluster in test_slurm),
# python3-torch (torch.distributed under gcomp-run), python3-matplotlib (gcomp-plot),
# python3-yaml (the Kubernetes manifests' checks), iproute2 (shaped links in network
# namespaces), util-linux (unshare, prlimit, setpriv), dataset-fashion-mnist
# (/usr/share/datasets/fashion-mnist: gcomp.torch's tests and the experiment), venv,
# pip, setuptools and wheel (the test that pip-installs the Python package).
TEST_PKGS="libcmocka-dev ucx-utils python3-numpy python3-pytest procps iproute2 util-linux
slurm-wlm munge python3-torch python3-matplotlib python3-yaml dataset-fashion-mnist
python3-venv python3-pip python3-setuptools python3-wheel"
venv=""
case "${1:-}" in
"") PKGS="$BUILD_PKGS $TEST_PKGS" ;;
--build-only) PKGS=$BUILD_PKGS ;;
--fuzz)
    venv=${2:?usage: install-deps.sh --fuzz VENV}
    PKGS="$BUILD_PKGS $TEST_PKGS clang libclang-rt-14-dev"
    ;;
*)
    echo "usage: deploy/install-deps.sh [--build-only | --fuzz VENV]" >&2
    exit 2
    ;;
esac
missing=""
for p in $PKGS; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
        missing="$missing $p"
    fi
done
if [ -n "$missing" ]; then
    echo "install-deps: installing$missing" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "install-deps: need root or sudo for:$missing" >&2; exit 1; }
        SUDO=sudo
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    # shellcheck disable=SC2086
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi
# atheris fuzzes the Python decoders; Debian's numpy is used from the environment.
if [ -n "$venv" ] && ! "$venv/bin/python" -c "import atheris" 2>/dev/null; then
    echo "install-deps: installing atheris into $venv" >&2
    /usr/bin/python3 -m venv --system-site-packages "$venv"
    "$venv/bin/pip" install -q atheris==3.0.0
fi
