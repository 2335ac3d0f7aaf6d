#!/usr/bin/env bash
#SBATCH --job-name=oid-test-shards
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=5
# One test shard per task of a Slurm job array, on the GPU Slurm gives the task. Submit from the
# repository root (or set OID_REPO), one array index per shard:
#
#   sbatch --array=0-24 -p PARTITION scripts/slurm_test_shards.sh --out-dir OUT --images-dir IMAGES \
#       (--shards-dir DIR | --ann-file ALL.pkl --num-shards 25) -- ENSEMBLE_TEST_ARGS...
#
# Task i runs scripts/test_shards.sh on shard i (--shard-start i --shard-end i+1) with its other options.
# A finished shard is skipped and an interrupted one resumes, so resubmitting the same array after
# preemption or failures redoes only what is missing; `--array=3,17` reruns chosen shards.
set -euo pipefail
if [[ -z ${SLURM_ARRAY_TASK_ID:-} ]]; then
  echo "slurm_test_shards.sh: SLURM_ARRAY_TASK_ID is not set; submit it as an array job:" \
       "sbatch --array=0-24 scripts/slurm_test_shards.sh ..." >&2
  exit 2
fi
# sbatch runs a copy of this file from its spool folder, so the repository is found from where the job
# was submitted.
REPO=${OID_REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}}
if [[ ! -f $REPO/scripts/test_shards.sh ]]; then
  echo "slurm_test_shards.sh: $REPO/scripts/test_shards.sh not found; submit from the repository root" \
       "or set OID_REPO" >&2
  exit 2
fi
TASK=$SLURM_ARRAY_TASK_ID
exec bash "$REPO/scripts/test_shards.sh" --shard-start "$TASK" --shard-end "$((TASK + 1))" "$@"
