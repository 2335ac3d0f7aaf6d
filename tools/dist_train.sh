#!/usr/bin/env bash
# Distributed training with torchrun, one process per GPU.
#   tools/dist_train.sh CONFIG GPUS [tools/train.py args...]
# Several nodes: run it on every node with the same MASTER_ADDR/MASTER_PORT and its own NODE_RANK:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 tools/dist_train.sh CONFIG 8 --resume
# Without CUDA the processes use the gloo backend (slow; for checks only).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG GPUS [train.py args...]" >&2; exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-${PORT:-29500}}
PYTHON=${PYTHON:-python}
TOOLS=$(cd "$(dirname "$0")" && pwd)

exec "$PYTHON" -m torch.distributed.run \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$GPUS" \
  --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
  "$TOOLS/train.py" "$CONFIG" --launcher pytorch "$@"
