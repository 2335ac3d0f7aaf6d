#!/usr/bin/env bash
# The whole pipeline end to end on a synthetic dataset in the official formats, on CPU:
#   1 data      synthetic train/validation/test download
#   2 prepare   leaf + parent annotation files, leaf/parent rebalancing, validation and test shards
#   3 train     two slim leaf models (a Cascade Mask R-CNN, seed 0; a Mask R-CNN, seed 1) and one slim
#               parent model, JOBS at a time (logs in DEMO_DIR/logs/)
#   4 infer     TTA ensembles from configs/ensemble/ (leaf: the 2 models x 2 scales x flip, fused through
#               shared proposals, and on validation also late by WBF and by NMS; parent: 1 x 2 x flip) and
#               the single leaf models over the validation and test shards (scripts/test_shards.sh)
#   5 post      util.post.pipeline: results -> CSV, expansion, mask NMS, leaf + parent combine, validation;
#               the two single-model submissions fused by util.post.fuse (submission-level WBF)
#   6 evaluate  the challenge metric on the validation split for every model and combination
#   7 search    tools/ensemble_search.py: the leaf members' fusion, weights and post-processing, and whether
#               and how to combine them with the parent ensemble, chosen on validation fold A, reported on
#               fold B (a small Optuna study)
#   8 report    DEMO_DIR/report.md (table, search leaderboard, stage times, pictures)
# A finished stage is not redone (its marker DEMO_DIR/.done/<stage>); delete DEMO_DIR to start over.
# Sizes come from the environment (the test runs a shrunken demo through this same script):
#   DEMO_DIR (work_dirs/demo) TRAIN_IMAGES (200) VAL_IMAGES (50) TEST_IMAGES (30) LEAF_ITERS (200)
#   PARENT_ITERS (120) NUM_SHARDS (2) SEED (0) DIFFICULTY (0.35: util.data.synthetic --difficulty)
#   FEDERATED (1: train split annotated as Open Images is) SEARCH_TRIALS (12)
#   JOBS (2: trainings, shards and the search's member-views run this many processes side by side, each
#   with nproc/JOBS threads; a slim model keeps one core busy better than two: on 2 cores two one-thread
#   processes do nearly twice the work of one two-thread process)
#   PYTHON (.venv/bin/python if present, else python)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
DEMO_DIR=${DEMO_DIR:-work_dirs/demo}
TRAIN_IMAGES=${TRAIN_IMAGES:-200}
VAL_IMAGES=${VAL_IMAGES:-50}
TEST_IMAGES=${TEST_IMAGES:-30}
LEAF_ITERS=${LEAF_ITERS:-200}
PARENT_ITERS=${PARENT_ITERS:-120}
NUM_SHARDS=${NUM_SHARDS:-2}
SEED=${SEED:-0}
DIFFICULTY=${DIFFICULTY:-0.35}
FEDERATED=${FEDERATED:-1}
SEARCH_TRIALS=${SEARCH_TRIALS:-12}
JOBS=${JOBS:-2}
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || { echo "demo.sh: JOBS must be a positive integer, got '$JOBS'" >&2; exit 2; }
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
export PYTHONWARNINGS=ignore

mkdir -p "$DEMO_DIR/.done"
DEMO_DIR=$(cd "$DEMO_DIR" && pwd)
DATA=$DEMO_DIR/data
ANN=$DATA/annotations
TIMES=$DEMO_DIR/stage_times.tsv
LEAF_CFG=configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf.py
LEAF_B_CFG=configs/tiny/mask-rcnn_r18-tiny_fpn_oid-leaf.py
ENSEMBLES=configs/ensemble
PARENT_CFG=configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-parent.py
HIERARCHY=data/challenge-2019-label300-segmentable-hierarchy.json
CLASSES=data/challenge-2019-classes-description-segmentable.csv
SINGLE=(--scales 256,256 --score-thr 0.0 --max-per-img 30)   # a single model's view and settings

# stage NAME DESCRIPTION: run stage_NAME once, timing it into stage_times.tsv.
stage() {
  local name=$1 description=$2
  if [[ -f $DEMO_DIR/.done/$name ]]; then
    echo "== [$name] $description: done before, reused"
    return
  fi
  echo "== [$name] $description"
  local start ms
  start=$(date +%s%N)
  "stage_$name"
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  printf '%s\t%s\t%d.%03d\n' "$name" "$description" $((ms / 1000)) $((ms % 1000)) >> "$TIMES"
  touch "$DEMO_DIR/.done/$name"
}

stage_data() {
  local federated=()
  if [[ $FEDERATED == 1 ]]; then federated=(--federated); fi
  "$PYTHON" -m util.data.synthetic --out "$DATA" --seed "$SEED" \
    --train "$TRAIN_IMAGES" --val "$VAL_IMAGES" --test "$TEST_IMAGES" --difficulty "$DIFFICULTY" "${federated[@]}"
}

stage_prepare() {
  local subset
  for subset in leaf parent; do
    "$PYTHON" -m util.data.build --subset "$subset" --img-root "$DATA" \
      --masks-csv "$DATA/challenge-2019-train-segmentation-masks.csv" --out "$ANN/$subset-train.pkl"
    "$PYTHON" -m util.data.build --subset "$subset" --img-root "$DATA" \
      --masks-csv "$DATA/challenge-2019-validation-segmentation-masks.csv" --out "$ANN/$subset-val.pkl"
    "$PYTHON" -m util.data.rebalance "$ANN/$subset-train.pkl" --preset "$subset" --rounds 7 --seed "$SEED" \
      --out "$ANN/$subset-train-balanced.npy" --report "$ANN/$subset-rebalance"
  done
  for subset in leaf parent; do  # the same shards, with each model family's class list
    "$PYTHON" -m util.data.shards --images-dir "$DATA/validation" --num-shards "$NUM_SHARDS" --subset "$subset" \
      --out "$ANN/val-shards-$subset" --id-list "$ANN/val-ids.csv"
    "$PYTHON" -m util.data.shards --sample-csv "$DATA/sample_empty_submission.csv" --num-shards "$NUM_SHARDS" \
      --subset "$subset" --out "$ANN/test-shards-$subset"
  done
  "$PYTHON" -m util.data.draw "$ANN/leaf-val.pkl" --img-root "$DATA" --out "$DEMO_DIR/pictures/gt" --limit 4
}

# train NAME CONFIG ITERS SEED
train() {
  "$PYTHON" tools/train.py "$2" --work-dir "$DEMO_DIR/models/$1" --resume --cfg-options data_root="$DATA/" \
    train_cfg.max_iters="$3" train_cfg.val_interval="$3" "param_scheduler.1.milestones=[$(($3 * 8 / 10))]" \
    randomness.seed="$4" default_hooks.checkpoint.interval="$3"
}

train_job() {
  case $1 in
    leaf-a) train leaf-a "$LEAF_CFG" "$LEAF_ITERS" "$SEED" ;;
    leaf-b) train leaf-b "$LEAF_B_CFG" "$LEAF_ITERS" "$((SEED + 1))" ;;
    parent) train parent "$PARENT_CFG" "$PARENT_ITERS" "$SEED" ;;
  esac
}

# lanes "JOB..." "JOB..." ...: the lanes side by side, each running its jobs one after another with
# nproc/lanes threads, its output in DEMO_DIR/logs/train-JOB.log; fails (after all lanes end) if one did.
lanes() {
  local lane pids=() status=0 threads=$(( $(nproc) / $# > 0 ? $(nproc) / $# : 1 ))
  mkdir -p "$DEMO_DIR/logs"
  echo "training side by side, $threads thread(s) each: $(printf '[%s] ' "$@")(logs: $DEMO_DIR/logs/train-*.log)"
  for lane in "$@"; do
    (
      export OMP_NUM_THREADS=$threads
      for job in $lane; do
        log=$DEMO_DIR/logs/train-$job.log
        if ! train_job "$job" > "$log" 2>&1; then
          echo "demo.sh: training $job failed; the end of $log:" >&2
          tail -n 15 "$log" >&2
          exit 1
        fi
        echo "trained $job: $(grep -o 'mAP@0.5IOU=[0-9.]*' "$log" | tail -n 1)"
      done
    ) &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  return "$status"
}

stage_train() {
  case $JOBS in
    1) train_job leaf-a; train_job leaf-b; train_job parent ;;
    2) lanes leaf-a "leaf-b parent" ;;            # the cascade is the slowest: the other two share a lane
    *) lanes leaf-a leaf-b parent ;;
  esac
}

checkpoint() { cat "$DEMO_DIR/models/$1/last_checkpoint"; }

images_of() { if [[ $1 == val ]]; then echo "$DATA/validation"; else echo "$DATA/test"; fi; }
ids_of() { if [[ $1 == val ]]; then echo "$ANN/val-ids.csv"; else echo "$DATA/sample_empty_submission.csv"; fi; }

# infer SPLIT NAME SUBSET ENSEMBLE_ARGS...: results of one model combination over one split's shards.
infer() {
  local split=$1 name=$2 subset=$3
  shift 3
  scripts/test_shards.sh --out-dir "$DEMO_DIR/results/$split/$name" --images-dir "$(images_of "$split")" \
    --shards-dir "$ANN/$split-shards-$subset" --gpus 0 --workers "$JOBS" --ext .jsonl.gz --python "$PYTHON" -- "$@"
}

stage_infer() {
  local split leaf=(--checkpoints "$(checkpoint leaf-a)" "$(checkpoint leaf-b)")
  for split in val test; do
    infer "$split" leaf leaf "$ENSEMBLES/demo-leaf.py" "${leaf[@]}"
    infer "$split" parent parent "$ENSEMBLES/demo-parent.py" --checkpoints "$(checkpoint parent)"
  done
  infer val leaf-wbf leaf "$ENSEMBLES/demo-leaf_wbf.py" "${leaf[@]}"
  infer val leaf-nms leaf "$ENSEMBLES/demo-leaf_nms.py" "${leaf[@]}"
  infer val leaf-a leaf --configs "$LEAF_CFG" --checkpoints "$(checkpoint leaf-a)" "${SINGLE[@]}"
  infer val leaf-b leaf --configs "$LEAF_B_CFG" --checkpoints "$(checkpoint leaf-b)" "${SINGLE[@]}"
}

# to_csv SPLIT NAME: one model's result shards -> one validated submission CSV of the split.
to_csv() {
  local split=$1 name=$2
  "$PYTHON" -m util.post.pipeline --results "$DEMO_DIR/results/$split/$name" --ids "$(ids_of "$split")" \
    --work "$DEMO_DIR/post/$split-$name" --out "$DEMO_DIR/submissions/$split-$name.csv" --no-progress
}

stage_post() {
  local split
  for split in val test; do
    "$PYTHON" -m util.post.pipeline --leaf-results "$DEMO_DIR/results/$split/leaf" \
      --parent-results "$DEMO_DIR/results/$split/parent" --ids "$(ids_of "$split")" --work "$DEMO_DIR/post/$split" \
      --out "$DEMO_DIR/submissions/$split-final.csv" --jobs 2 --no-progress
  done
  cp "$DEMO_DIR/submissions/test-final.csv" "$DEMO_DIR/submission.csv"
  local name
  for name in leaf-a leaf-b leaf leaf-wbf leaf-nms; do to_csv val "$name"; done
  "$PYTHON" -m util.post.fuse "$DEMO_DIR/submissions/val-leaf-a.csv" "$DEMO_DIR/submissions/val-leaf-b.csv" \
    --method wbf --out "$DEMO_DIR/submissions/val-leaf-fused.csv" --no-progress
  "$PYTHON" -m util.post.expand "$DEMO_DIR/submissions/val-leaf.csv" -o "$DEMO_DIR/submissions/val-leaf-expanded.csv"
}

evaluate() {
  local name=$1
  shift
  "$PYTHON" -m util.metric.evaluate --submission "$DEMO_DIR/submissions/val-$name.csv" \
    --masks-csv "$DATA/challenge-2019-validation-segmentation-masks.csv" --masks-dir "$DATA" \
    --bbox-csv "$DATA/challenge-2019-validation-segmentation-bbox.csv" \
    --labels-csv "$DATA/challenge-2019-validation-segmentation-labels.csv" \
    --hierarchy "$HIERARCHY" --classes "$CLASSES" --images-dir "$DATA/validation" "$@" \
    | tee "$DEMO_DIR/eval/$name.txt"
}

stage_evaluate() {
  mkdir -p "$DEMO_DIR/eval"
  local name
  for name in leaf-a leaf-b leaf leaf-wbf leaf-nms leaf-fused leaf-expanded; do evaluate "$name"; done
  evaluate final --per-class "$DEMO_DIR/eval/final-per-class.csv" --plots "$DEMO_DIR/pictures/eval"
  "$PYTHON" -m util.post.draw "$DEMO_DIR/submissions/val-final.csv" --annotations "$ANN/leaf-val.pkl" \
    --img-root "$DATA" --out "$DEMO_DIR/pictures/predictions" --limit 4 --score-thr 0.5
}

GT_FILES=()
gt_files() {
  GT_FILES=(--masks-csv "$DATA/challenge-2019-validation-segmentation-masks.csv" --masks-dir "$DATA"
    --bbox-csv "$DATA/challenge-2019-validation-segmentation-bbox.csv"
    --labels-csv "$DATA/challenge-2019-validation-segmentation-labels.csv")
}

stage_search() {
  gt_files
  # The parent classes over the whole validation folder (one file; the leaf file's images are among them).
  "$PYTHON" -m util.data.shards --images-dir "$DATA/validation" --num-shards 1 --subset parent \
    --out "$ANN/val-parent-all" --no-progress > /dev/null
  "$PYTHON" tools/ensemble_search.py "$ENSEMBLES/demo-leaf.py" --checkpoints "$(checkpoint leaf-a)" "$(checkpoint leaf-b)" \
    --parent-config "$ENSEMBLES/demo-parent.py" --parent-checkpoints "$(checkpoint parent)" \
    --parent-ann-file "$ANN/val-parent-all/shard_00_of_01.pkl" \
    --space configs/search/demo.py --ann-file "$ANN/leaf-val.pkl" --images-dir "$DATA" --out "$DEMO_DIR/search" \
    --trials "$SEARCH_TRIALS" --seed "$SEED" --extra "shared proposals=$DEMO_DIR/submissions/val-leaf-expanded.csv" \
    "final (pipeline: shared proposals + parent model)=$DEMO_DIR/submissions/val-final.csv" \
    --jobs "$JOBS" --no-progress "${GT_FILES[@]}" | tail -n 3
}

stage_report() {
  "$PYTHON" tools/demo_report.py "$DEMO_DIR"
}

printf '{"train_images": %d, "val_images": %d, "test_images": %d, "leaf_iters": %d, "parent_iters": %d, "num_shards": %d, "seed": %d, "difficulty": "%s", "federated": %d, "search_trials": %d, "jobs": %d}\n' \
  "$TRAIN_IMAGES" "$VAL_IMAGES" "$TEST_IMAGES" "$LEAF_ITERS" "$PARENT_ITERS" "$NUM_SHARDS" "$SEED" "$DIFFICULTY" \
  "$FEDERATED" "$SEARCH_TRIALS" "$JOBS" > "$DEMO_DIR/settings.json"
stage data "synthetic dataset in the official formats"
stage prepare "annotation files, rebalancing, shards"
stage train "two slim leaf models (cascade, Mask R-CNN) and one slim parent model"
stage infer "TTA ensembles (shared proposals, WBF, NMS) and single models over the shards"
stage post "expansion, mask NMS, combine, validation, submission fusion"
stage evaluate "challenge metric on the validation split"
stage search "ensemble search on validation (fold A chooses, fold B reports)"
rm -f "$DEMO_DIR/.done/report"
stage report "report"
cat "$DEMO_DIR/report-table.md"
echo "report: $DEMO_DIR/report.md   submission: $DEMO_DIR/submission.csv"
