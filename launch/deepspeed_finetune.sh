#!/usr/bin/env bash
# Start `dsdocre finetune` under the deepspeed launcher: one node or many.
#
#   launch/deepspeed_finetune.sh [dsdocre finetune arguments...]
#
# Environment:
#   HOSTFILE     a deepspeed hostfile ("host slots=N" per line, see launch/hostfile.example);
#                unset = this machine only
#   NUM_PROCS    processes on this machine when there is no hostfile (default: GPUs, or 2 on CPU)
#   MASTER_PORT  rendezvous port (default 29500)
#   PYTHON       the interpreter to use; the first of $PYTHON, the active venv's, `python3` on PATH
#                and this checkout's .venv/bin/python that has dsdocre and deepspeed is used, so
#                nothing needs activating; the launcher starts every process with it
# On a machine without CUDA, DeepSpeed's CPU accelerator and the gloo backend are used.
set -euo pipefail
cd "$(dirname "$0")/.."
has_dsdocre() {
  "$1" -I -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('dsdocre') and u.find_spec('deepspeed')))" 2>/dev/null
}
python_found=
for candidate in "${PYTHON:-}" "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}" python3 "$PWD/.venv/bin/python"; do
  if [[ -n "$candidate" ]] && has_dsdocre "$candidate"; then python_found=$candidate; break; fi
done
[[ -n "$python_found" ]] || { echo "deepspeed_finetune.sh: no python with dsdocre and deepspeed; run bash launch/install.sh" >&2; exit 1; }
PYTHON=$python_found
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"   # one core per process on CPU
  default_procs=2
else
  default_procs=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
fi
args=(--master_port "${MASTER_PORT:-29500}")
if [[ -n "${HOSTFILE:-}" ]]; then
  args+=(--hostfile "$HOSTFILE")
else
  args+=(--num_gpus "${NUM_PROCS:-$default_procs}")
fi
exec "$PYTHON" -m deepspeed.launcher.runner "${args[@]}" --module dsdocre.cli finetune "$@"
