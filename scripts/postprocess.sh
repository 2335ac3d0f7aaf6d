#!/usr/bin/env bash
# The reference's post-processing chain: leaf and parent result shards -> one validated submission.
#
# Per shard S (a results file S.jsonl[.gz] in both result directories):
#   1. results -> CSV, leaf and parent               util.post.to_submission
#   2. leaf expansion, parents only                  util.post.expand --parents-only
#   3. parent-model expansion (Bear->Carnivore, ...) util.post.expand
#   4. mask NMS of 2 with 3                          util.post.mask_nms
#   5. leaf + merged parents                         combine_leaf_and_parent.py
# then all shards are merged in test-id order (util.post.merge) and validated
# (util.post.validate); the submission is moved to --out only if it is valid.
#
# Resumable: every step writes its output atomically, and a step whose output exists is skipped.
# Delete a step's output (or the whole --work directory) to redo it.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/postprocess.sh --leaf-results DIR --parent-results DIR --ids SAMPLE_CSV --work DIR --out CSV
                              [--shard-ids DIR] [--score-thr T] [--top-k K] [--iou-thr T] [--vote]
                              [--max-dets N] [--jobs N] [--hierarchy JSON] [--python PY]
  --leaf-results DIR    leaf-model results, one file per shard (NAME.jsonl or NAME.jsonl.gz)
  --parent-results DIR  parent-model results with the same shard names
  --ids SAMPLE_CSV      test id list in submission order (sample_empty_submission.csv, with sizes)
  --work DIR            intermediate files (per step, per shard)
  --out CSV             the validated submission
  --shard-ids DIR       optional NAME.txt / NAME.csv id list per shard (missing images -> empty rows)
  --score-thr T         results -> CSV score threshold (default 0)
  --top-k K             results -> CSV detections per image per model (default: all)
  --iou-thr T           mask NMS IoU threshold (default 0.5)
  --vote                mask voting in the NMS
  --max-dets N          per-image cap of the final submission (default: none)
  --jobs N              shards processed in parallel (default 1)
  --python PY           Python interpreter (default: $PYTHON, else python)
USAGE
}

leaf_dir= parent_dir= ids= work= out= shard_ids= score_thr=0 top_k= iou_thr=0.5 vote= max_dets= jobs=1
hierarchy= py="${PYTHON:-python}"
while [ $# -gt 0 ]; do
  case "$1" in
    --leaf-results) leaf_dir=$2; shift 2 ;;
    --parent-results) parent_dir=$2; shift 2 ;;
    --ids) ids=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --shard-ids) shard_ids=$2; shift 2 ;;
    --score-thr) score_thr=$2; shift 2 ;;
    --top-k) top_k=$2; shift 2 ;;
    --iou-thr) iou_thr=$2; shift 2 ;;
    --vote) vote=--vote; shift ;;
    --max-dets) max_dets=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --hierarchy) hierarchy=$2; shift 2 ;;
    --python) py=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
for v in leaf_dir parent_dir ids work out; do
  if [ -z "${!v}" ]; then echo "error: missing --${v//_/-}" >&2; usage >&2; exit 2; fi
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
hier_args=()
[ -n "$hierarchy" ] && hier_args=(--hierarchy "$hierarchy")

# Run "$@" unless its output (first argument) exists; all steps write atomically.
step() {
  local output=$1; shift
  if [ -e "$output" ]; then
    echo "skip (done): $output" >&2
  else
    echo "run: $*" >&2
    "$@"
  fi
}

results_file() {  # results_file DIR NAME -> path of NAME.jsonl or NAME.jsonl.gz
  if [ -e "$1/$2.jsonl" ]; then echo "$1/$2.jsonl"; elif [ -e "$1/$2.jsonl.gz" ]; then echo "$1/$2.jsonl.gz"
  else echo "error: no results for shard $2 in $1 ($2.jsonl or $2.jsonl.gz)" >&2; return 1; fi
}

process_shard() {
  local name=$1 leaf parent id_args=() conv_args=(--score-thr "$score_thr")
  leaf=$(results_file "$leaf_dir" "$name")
  parent=$(results_file "$parent_dir" "$name")
  [ -n "$top_k" ] && conv_args+=(--top-k "$top_k")
  if [ -n "$shard_ids" ]; then
    for f in "$shard_ids/$name.txt" "$shard_ids/$name.csv"; do [ -e "$f" ] && id_args=(--ids "$f"); done
  fi
  local d=$work
  step "$d/leaf_csv/$name.csv" "$py" -m util.post.to_submission "$leaf" -o "$d/leaf_csv/$name.csv" \
    "${conv_args[@]}" "${id_args[@]}"
  step "$d/parent_csv/$name.csv" "$py" -m util.post.to_submission "$parent" -o "$d/parent_csv/$name.csv" \
    "${conv_args[@]}" "${id_args[@]}"
  step "$d/leaf_parents/$name.csv" "$py" -m util.post.expand "$d/leaf_csv/$name.csv" --parents-only \
    -o "$d/leaf_parents/$name.csv" "${hier_args[@]}"
  step "$d/parent_expanded/$name.csv" "$py" -m util.post.expand "$d/parent_csv/$name.csv" \
    -o "$d/parent_expanded/$name.csv" "${hier_args[@]}"
  step "$d/parent_nms/$name.csv" "$py" -m util.post.mask_nms "$d/leaf_parents/$name.csv" \
    "$d/parent_expanded/$name.csv" -o "$d/parent_nms/$name.csv" --iou-thr "$iou_thr" $vote
  local cap=()
  [ -n "$max_dets" ] && cap=(--max-dets "$max_dets")
  step "$d/combined/$name.csv" "$py" "$repo/combine_leaf_and_parent.py" --leaf "$d/leaf_csv/$name.csv" \
    --parent "$d/parent_nms/$name.csv" -o "$d/combined/$name.csv" "${cap[@]}"
}

if [ -e "$out" ]; then
  echo "skip (done): $out" >&2
  exit 0
fi

names=()
for f in "$leaf_dir"/*.jsonl "$leaf_dir"/*.jsonl.gz; do
  [ -e "$f" ] || continue
  n=$(basename "$f"); n=${n%.gz}; n=${n%.jsonl}
  names+=("$n")
done
if [ ${#names[@]} -eq 0 ]; then echo "error: no results files (*.jsonl, *.jsonl.gz) in $leaf_dir" >&2; exit 1; fi
for n in "${names[@]}"; do results_file "$parent_dir" "$n" >/dev/null; done

# Shards, up to --jobs at a time; any failing shard fails the run (after the running ones finish).
running=()
failed=0
for n in "${names[@]}"; do
  process_shard "$n" &
  running+=($!)
  if [ ${#running[@]} -ge "$jobs" ]; then
    wait "${running[0]}" || failed=1
    running=("${running[@]:1}")
  fi
  [ "$failed" = 0 ] || break
done
for p in "${running[@]}"; do wait "$p" || failed=1; done
if [ "$failed" != 0 ]; then echo "error: a shard failed (see above)" >&2; exit 1; fi

combined=()
for n in "${names[@]}"; do combined+=("$work/combined/$n.csv"); done
step "$work/submission.csv" "$py" -m util.post.merge "${combined[@]}" --ids "$ids" \
  -o "$work/submission.csv"
"$py" -m util.post.validate "$work/submission.csv" --ids "$ids"
mkdir -p "$(dirname "$out")"
mv "$work/submission.csv" "$out"
echo "done: $out" >&2
