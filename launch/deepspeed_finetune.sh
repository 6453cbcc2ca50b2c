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
# On a machine without CUDA, DeepSpeed's CPU accelerator and the gloo backend are used.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"   # one core per process on CPU
  default_procs=2
else
  default_procs=$(python -c "import torch; print(torch.cuda.device_count())")
fi
args=(--master_port "${MASTER_PORT:-29500}")
if [[ -n "${HOSTFILE:-}" ]]; then
  args+=(--hostfile "$HOSTFILE")
else
  args+=(--num_gpus "${NUM_PROCS:-$default_procs}")
fi
exec deepspeed "${args[@]}" --module dsdocre.cli finetune "$@"
