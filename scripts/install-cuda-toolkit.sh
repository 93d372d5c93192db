#!/usr/bin/env bash
# Installs the CUDA 13.0 compiler (nvcc), runtime headers/libraries and cuBLAS from PyPI
# into a Python venv, so the `cuda` feature can be built on a machine without a GPU or a
# system CUDA. Prints the directory to use as CUDA_HOME (it has bin/, include/, lib/).
# With --cudnn it adds cuDNN 9.14 (about 350 MB), which build.rs then finds beside the
# toolkit for the `cudnn` feature.
# The H100/H200 device machines already have CUDA 13.0 at /usr/local/cuda with the same
# versions, so binaries built against this run there.
#   usage: export CUDA_HOME=$(scripts/install-cuda-toolkit.sh [--cudnn] [VENV_DIR])
set -euo pipefail
packages=("nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-crt==13.0.*"
  "nvidia-nvvm==13.0.*" "nvidia-cublas==13.1.0.3" "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-nvrtc==13.0.*")
if [ "${1:-}" = --cudnn ]; then
  packages+=("nvidia-cudnn-cu13==9.14.0.64")
  shift
fi
venv=${1:-${HOME}/.cache/ferrometal-cuda}
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv" >&2; fi
"$venv/bin/pip" install -q --disable-pip-version-check "${packages[@]}" >&2
home=$("$venv/bin/python" -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
# The wheels ship only versioned sonames; give the linker the plain names too.
for lib in "$home"/lib/lib*.so.*; do
  plain=${lib%%.so.*}.so
  [ -e "$plain" ] || ln -s "$(basename "$lib")" "$plain"
done
# CMake's CUDA support (native/CMakeLists.txt, -DFM_CUDA=ON) looks in lib64.
[ -e "$home/lib64" ] || ln -s lib "$home/lib64"
echo "$home"
