#!/usr/bin/env bash
# Run tools/ensemble_test.py over many test shards: one process per GPU (or N CPU workers), a queue so
# each free worker takes the next shard, finished shards skipped, interrupted ones resumed.
#
#   scripts/test_shards.sh --out-dir OUT --images-dir IMAGES \
#       (--shards-dir DIR | --ann-file ALL.pkl --num-shards N) \
#       [--gpus N | --gpu-ids LIST] [--workers W] \
#       [--nnodes M --node-rank R | --shard-start S --shard-end E] \
#       [--ext .jsonl.gz] [--python PY] -- ENSEMBLE_TEST_ARGS...
#
# ENSEMBLE_TEST_ARGS are tools/ensemble_test.py's model and view options (--configs, --checkpoints,
# --scales, --flip, --score-thr, --max-per-img, ...); this script sets --ann-file/--shard, --out, --device.
#   --shards-dir  a folder made by `python -m util.data.shards` (its manifest.json lists the shard files); or
#   --ann-file + --num-shards   one annotation file split into N consecutive shards (--shard I/N).
#   --gpus N      use GPUs 0..N-1 of this node; --gpu-ids 0,2,3 these ones. Default: $GPUS, else the
#                 CUDA_VISIBLE_DEVICES list, else the count nvidia-smi reports, else 0.
#                 0 = CPU: --workers W (default $WORKERS or 1) processes, each with nproc/W threads.
#   --nnodes/--node-rank        this node runs the node-rank-th of nnodes consecutive ranges of shards
#                               (or $NNODES/$NODE_RANK); --shard-start/--shard-end: shards [S, E).
# Results: OUT/<shard name><ext>; logs: OUT/logs/<shard name>.log. Exit status 1 if any shard failed.
# E.g. 25 shards on two 4-GPU nodes (run on each node with its rank):
#   scripts/test_shards.sh --out-dir results/leaf --images-dir data/oid/test --shards-dir ann/test_shards \
#       --gpus 4 --nnodes 2 --node-rank 0 -- --configs L1.py L2.py L3.py --checkpoints L1.pth L2.pth L3.pth \
#       --scales 1333,800 1600,960 --flip --score-thr 0 --max-per-img 120
set -euo pipefail

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; exit "${1:-2}"; }
die() { echo "test_shards.sh: $*" >&2; exit 2; }

OUT_DIR= IMAGES_DIR= SHARDS_DIR= ANN_FILE= NUM_SHARDS= EXT=.jsonl.gz
GPU_ARG=${GPUS:-} GPU_IDS= WORKERS=${WORKERS:-1} PYTHON=${PYTHON:-python}
NNODES=${NNODES:-} NODE_RANK=${NODE_RANK:-} SHARD_START=${SHARD_START:-} SHARD_END=${SHARD_END:-}
while (($#)); do
  case $1 in
    --out-dir) OUT_DIR=$2; shift 2 ;;
    --images-dir) IMAGES_DIR=$2; shift 2 ;;
    --shards-dir) SHARDS_DIR=$2; shift 2 ;;
    --ann-file) ANN_FILE=$2; shift 2 ;;
    --num-shards) NUM_SHARDS=$2; shift 2 ;;
    --gpus) GPU_ARG=$2; shift 2 ;;
    --gpu-ids) GPU_IDS=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --nnodes) NNODES=$2; shift 2 ;;
    --node-rank) NODE_RANK=$2; shift 2 ;;
    --shard-start) SHARD_START=$2; shift 2 ;;
    --shard-end) SHARD_END=$2; shift 2 ;;
    --ext) EXT=$2; shift 2 ;;
    --python) PYTHON=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) die "unknown option $1 (model options go after --)" ;;
  esac
done
EXTRA=("$@")
REPO=$(cd "$(dirname "$0")/.." && pwd)
TOOL=$REPO/tools/ensemble_test.py

[[ -n $OUT_DIR && -n $IMAGES_DIR ]] || die "--out-dir and --images-dir are required"
[[ -d $IMAGES_DIR ]] || die "$IMAGES_DIR: images folder not found"
is_int() { [[ $1 =~ ^[0-9]+$ ]]; }

# The shards: name, annotation file and (when splitting one file) the --shard I/N of each, as util.data.shards
# plans them (from the folder's manifest.json, or one file split N ways).
[[ -z $SHARDS_DIR || -z $ANN_FILE ]] || die "give --shards-dir or --ann-file, not both"
if [[ -n $SHARDS_DIR ]]; then PLAN_ARGS=(--shards-dir "$SHARDS_DIR")
else
  [[ -n $ANN_FILE && -n $NUM_SHARDS ]] || die "give --shards-dir, or --ann-file with --num-shards"
  PLAN_ARGS=(--ann-file "$ANN_FILE" --num-shards "$NUM_SHARDS")
fi
PLAN=$(PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m util.data.shards plan "${PLAN_ARGS[@]}") || exit 2
NAMES=() SHARD_ANN=() SHARD_SPEC=()
while IFS=$'\t' read -r name ann spec; do
  NAMES+=("$name"); SHARD_ANN+=("$ann"); SHARD_SPEC+=("$spec")
done <<<"$PLAN"
N=${#NAMES[@]}

# This node's range of shards.
if [[ -n $NNODES || -n $NODE_RANK ]]; then
  [[ -z $SHARD_START && -z $SHARD_END ]] \
    || die "give --nnodes/--node-rank or --shard-start/--shard-end, not both"
  is_int "${NNODES:-x}" && is_int "${NODE_RANK:-x}" && ((NODE_RANK < NNODES)) \
    || die "--nnodes M --node-rank R needs integers with 0 <= R < M"
  START=$(( N / NNODES * NODE_RANK + (NODE_RANK < N % NNODES ? NODE_RANK : N % NNODES) ))
  END=$(( START + N / NNODES + (NODE_RANK < N % NNODES ? 1 : 0) ))
else
  START=${SHARD_START:-0} END=${SHARD_END:-$N}
  is_int "$START" && is_int "$END" && ((START <= END && END <= N)) \
    || die "--shard-start/--shard-end must satisfy 0 <= S <= E <= $N"
fi

# Workers: one per GPU (CUDA_VISIBLE_DEVICES=that GPU), or CPU processes.
if [[ -z $GPU_IDS && -z $GPU_ARG ]]; then
  if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then GPU_IDS=$CUDA_VISIBLE_DEVICES
  elif command -v nvidia-smi >/dev/null 2>&1; then
    GPU_ARG=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  else GPU_ARG=0; fi
fi
if [[ -n $GPU_IDS ]]; then
  [[ -z $GPU_ARG ]] || die "give --gpus or --gpu-ids, not both"
  IFS=, read -ra SLOTS <<<"$GPU_IDS"
elif ! is_int "$GPU_ARG"; then die "--gpus must be a count (0 = CPU)"
elif ((GPU_ARG > 0)); then mapfile -t SLOTS < <(seq 0 $((GPU_ARG - 1)))
else
  is_int "$WORKERS" && ((WORKERS > 0)) || die "--workers must be a positive integer"
  mapfile -t SLOTS < <(seq 1 "$WORKERS" | sed 's/^/cpu/')
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / WORKERS > 0 ? $(nproc) / WORKERS : 1 ))}
fi

mkdir -p "$OUT_DIR/logs"
STATE=$(mktemp -d)
trap 'rm -rf "$STATE"' EXIT
echo "shards $START..$((END - 1)) of $N on ${#SLOTS[@]} worker(s): ${SLOTS[*]}"

run_one() {  # $1 shard index, $2 slot; runs in a worker; returns the tool's exit status
  local i=$1 slot=$2 child= rc=0 visible
  local -a args=(--images-dir "$IMAGES_DIR" --ann-file "${SHARD_ANN[$1]}" --out "$OUT_DIR/${NAMES[$1]}$EXT")
  [[ -z ${SHARD_SPEC[$i]} ]] || args+=(--shard "${SHARD_SPEC[$i]}")
  if [[ $slot == cpu* ]]; then
    visible=''; args+=(--device cpu)          # no GPU visible to a CPU worker
  else
    visible=$slot; args+=(--device cuda:0)    # its one GPU, renumbered 0 inside the process
  fi
  # A stopped worker stops its shard with SIGTERM: the tool then closes its .partial file cleanly.
  trap '[[ -z $child ]] || { kill -TERM "$child" 2>/dev/null; wait "$child"; }; exit 143' TERM INT
  CUDA_VISIBLE_DEVICES=$visible "$PYTHON" "$TOOL" "${EXTRA[@]}" "${args[@]}" \
    >>"$OUT_DIR/logs/${NAMES[$i]}.log" 2>&1 &
  child=$!
  wait "$child" || rc=$?
  return "$rc"
}

worker() {  # $1 slot: takes the next unclaimed shard of the range until none is left
  local slot=$1 i out rc
  for ((i = START; i < END; i++)); do
    mkdir "$STATE/claim.$i" 2>/dev/null || continue   # atomic: exactly one worker gets each shard
    out="$OUT_DIR/${NAMES[$i]}$EXT"
    if [[ -e $out ]]; then
      echo "shard $i (${NAMES[$i]}): skipped, $out exists"; touch "$STATE/skipped.$i"; continue
    fi
    echo "shard $i (${NAMES[$i]}): running on $slot"
    rc=0; run_one "$i" "$slot" || rc=$?
    if ((rc == 0)); then echo "shard $i: done"; touch "$STATE/ran.$i"
    else echo "shard $i: FAILED (exit $rc), see $OUT_DIR/logs/${NAMES[$i]}.log"; touch "$STATE/failed.$i"; fi
  done
}

PIDS=() STOPPED=0
for slot in "${SLOTS[@]}"; do worker "$slot" & PIDS+=($!); done
trap 'STOPPED=1; kill -TERM "${PIDS[@]}" 2>/dev/null || true' INT TERM
for pid in "${PIDS[@]}"; do
  while kill -0 "$pid" 2>/dev/null; do wait "$pid" || true; done
done

list() {  # indices of the shards in state $1, or '-'
  local f out=()
  for f in "$STATE/$1".*; do [[ -e $f ]] && out+=("${f##*.}"); done
  if ((${#out[@]})); then printf '%s\n' "${out[@]}" | sort -n | paste -sd' '; else echo '-'; fi
}
echo "ran: $(list ran); skipped: $(list skipped); failed: $(list failed)"
if ((STOPPED)); then echo "stopped: unfinished shards keep their .partial file and resume on the next run"; exit 143; fi
if compgen -G "$STATE/failed.*" >/dev/null; then exit 1; fi
