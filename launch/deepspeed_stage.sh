#!/usr/bin/env bash
# Start one dsdocre training stage under the deepspeed launcher: one machine, several nodes by
# hostfile (ssh/pdsh), or several nodes without ssh (this script started once on every node).
#
#   launch/deepspeed_stage.sh STAGE [stage arguments...]
#
#   STAGE: finetune (`dsdocre finetune`), pretrain (`dsdocre pretrain`),
#          denoise-train (`dsdocre denoise train`)
#
# Environment:
#   PYTHON       the interpreter to use; the first of $PYTHON, the active venv's, `python3` on PATH
#                and this checkout's .venv/bin/python that has dsdocre and deepspeed is used, so
#                nothing needs activating; the launcher starts every process with it
#   NUM_PROCS    processes on this machine (default: its GPUs, or 2 on CPU); ignored with HOSTFILE
#   MASTER_PORT  rendezvous port (default 29500); the same on every node
#
#   One machine: nothing more.
#
#   Several nodes by ssh: HOSTFILE, a deepspeed hostfile ("host slots=N" per line, see
#   launch/hostfile.example). Started on one node; deepspeed reaches the others by passwordless ssh
#   (pdsh). MASTER_ADDR optional (default: the hostfile's first host name).
#
#   Several nodes without ssh: started once on every node, each with its own NODE_RANK:
#     NODE_RANK    this node's rank, 0 .. NUM_NODES-1 (setting it selects this mode)
#     NUM_NODES    number of nodes (default 1)
#     MASTER_ADDR  address of the node with NODE_RANK=0, reachable from every node (required when
#                  NUM_NODES > 1; default 127.0.0.1 for one node)
#     NUM_PROCS    processes per node, the same on every node; or HOSTFILE (identical on every
#                  node, its host names are only labels) for nodes of different sizes
#   Global ranks: node 0's processes first, then node 1's, ...
#
# On a machine without CUDA, DeepSpeed's CPU accelerator and the gloo backend are used, one thread
# per process (OMP_NUM_THREADS=1); on a GPU node each process gets its share of the node's cores.
set -euo pipefail
me=$(basename "$0")
stages="finetune, pretrain, denoise-train"
die() { echo "$me: $*" >&2; exit 2; }

stage=${1:-}
case "$stage" in
  finetune) command=(finetune) ;;
  pretrain) command=(pretrain) ;;
  denoise-train) command=(denoise train) ;;
  "") die "no STAGE given; usage: $me STAGE [arguments...] with STAGE one of: $stages" ;;
  *) die "unknown STAGE '$stage'; one of: $stages" ;;
esac
shift

cd "$(dirname "$0")/.."
has_dsdocre() {
  "$1" -I -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('dsdocre') and u.find_spec('deepspeed')))" 2>/dev/null
}
python_found=
for candidate in "${PYTHON:-}" "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}" python3 "$PWD/.venv/bin/python"; do
  if [[ -n "$candidate" ]] && has_dsdocre "$candidate"; then python_found=$candidate; break; fi
done
[[ -n "$python_found" ]] || { echo "$me: no python with dsdocre and deepspeed; run bash launch/install.sh" >&2; exit 1; }
PYTHON=$python_found
# torch is asked about CUDA only where the node has a GPU device (NVIDIA or ROCm): importing it
# costs seconds per launch
nvidia_gpus=0
command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && nvidia_gpus=1
gpu_devices=$nvidia_gpus
compgen -G "/dev/nvidia[0-9]*" >/dev/null || compgen -G "/proc/driver/nvidia/gpus/*" >/dev/null \
  || [[ -e /dev/kfd ]] && gpu_devices=1
if ! ((gpu_devices)) || ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  if ((nvidia_gpus)); then
    echo "$me: WARNING: this node has NVIDIA GPUs but $PYTHON's torch cannot use them (a CPU-only build?):" \
      "training runs on the CPU. Install a CUDA build of torch into that environment first." >&2
  fi
  export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
  gpu=0
  default_procs=2
else
  gpu=1
  default_procs=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
fi
procs=${NUM_PROCS:-$default_procs}
# Threads per process: one core each on CPU (the processes are the parallelism); on a GPU node the
# node's cores shared between its processes (unset, each would take every core: N-fold oversubscribed).
if ((gpu)) && [[ "$procs" =~ ^[0-9]+$ ]] && ((procs > 0)); then
  cores=$(nproc 2>/dev/null || echo 1)
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( cores / procs > 0 ? cores / procs : 1 ))}"
else
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
fi
in_range() {  # NAME VALUE LOW HIGH: VALUE is a whole number in LOW..HIGH, or the script stops
  if ! [[ "$2" =~ ^[0-9]+$ ]] || ((10#$2 < $3 || 10#$2 > $4)); then
    die "$1 must be a whole number in $3..$4, not '$2'"
  fi
}
[[ -n "${HOSTFILE:-}" ]] || in_range NUM_PROCS "$procs" 1 4096

args=(--master_port "${MASTER_PORT:-29500}")
if [[ -n "${NODE_RANK:-}" ]]; then
  # deepspeed's --no_ssh: every node runs its own launcher, which starts this node's processes
  # only. The launcher still needs a hostfile: it is the only way to give it more than one node,
  # and the world size and every process's global rank are computed from it (so every node must
  # see the same one). Without a hostfile deepspeed sets one node of its own, forces
  # MASTER_ADDR=127.0.0.1 and refuses --num_nodes > 1.
  if [[ -n "${HOSTFILE:-}" ]]; then
    [[ -f "$HOSTFILE" ]] || die "HOSTFILE $HOSTFILE: no such file"
    host_lines=$(grep -cE '^[[:space:]]*[^#[:space:]]' "$HOSTFILE" || true)
    nodes=${NUM_NODES:-$host_lines}   # NUM_NODES < its lines: its first NUM_NODES hosts
    in_range NUM_NODES "$nodes" 1 "$host_lines"
  else
    nodes=${NUM_NODES:-1}
    in_range NUM_NODES "$nodes" 1 100000
  fi
  nodes=$((10#$nodes))
  in_range NODE_RANK "$NODE_RANK" 0 $((nodes - 1))
  if ((nodes > 1)) && [[ -z "${MASTER_ADDR:-}" ]]; then
    # without it deepspeed would ask the first host of the hostfile over ssh
    die "MASTER_ADDR (the address of the node with NODE_RANK=0) is required with NUM_NODES=$nodes"
  fi
  if [[ -n "${HOSTFILE:-}" ]]; then
    hostfile=$HOSTFILE
  else
    # "node-K slots=NUM_PROCS" for every node, in a file deleted at once and read through the open
    # descriptor 3 (/dev/fd/3): nothing is left behind, though the launcher is exec'd below
    tmp_hostfile=$(mktemp "${TMPDIR:-/tmp}/dsdocre-hostfile.XXXXXX")
    for ((k = 0; k < nodes; k++)); do echo "node-$k slots=$procs"; done > "$tmp_hostfile"
    exec 3< "$tmp_hostfile"
    rm -f "$tmp_hostfile"
    hostfile=/dev/fd/3
  fi
  args+=(--no_ssh --hostfile "$hostfile" --num_nodes "$nodes" --node_rank "$((10#$NODE_RANK))"
         --master_addr "${MASTER_ADDR:-127.0.0.1}")
elif [[ -n "${HOSTFILE:-}" ]]; then
  [[ -f "$HOSTFILE" ]] || die "HOSTFILE $HOSTFILE: no such file"
  if [[ -z "${MASTER_ADDR:-}" ]]; then
    # deepspeed would otherwise take the first address `hostname -I` prints on the first host, which
    # may be an interface the other nodes cannot reach: use that host's name as the hostfile gives it
    MASTER_ADDR=$(grep -m1 -E '^[[:space:]]*[^#[:space:]]' "$HOSTFILE" | awk '{print $1}')
    [[ -n "$MASTER_ADDR" ]] || die "HOSTFILE $HOSTFILE names no host"
    echo "$me: MASTER_ADDR not set: using the hostfile's first host, $MASTER_ADDR (set MASTER_ADDR to override)" >&2
  fi
  args+=(--hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR")
else
  args+=(--num_gpus "$procs")
fi
exec "$PYTHON" -m deepspeed.launcher.runner "${args[@]}" --module dsdocre.cli "${command[@]}" "$@"
