#!/bin/bash
# A sweep as a Slurm job array: each task runs one slice of the grid into the same run directory
# (on a file system every node mounts). Tasks start whenever the queue allows, in any order; a
# task that fails or is preempted is rerun alone (`sbatch --array=3 sweeps/slurm-array.sh`) and
# resumes from its checkpoints. The task that finishes last writes results.jsonl, the manifest
# and the figures; `jaxcl merge RUN_DIR` does the same at any time. Watch it with
# `jaxcl status RUN_DIR` from any node. Every task must use the same count (here 8: --array=0-7).
#
#   sbatch sweeps/slurm-array.sh                       # the Figure 1 sweep, 8 tasks
#   SWEEP=sweeps/theorem33.toml OUT=runs/theorem33 sbatch sweeps/slurm-array.sh
#
#SBATCH --job-name=jaxcl
#SBATCH --array=0-7
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=02:00:00
#SBATCH --requeue
#SBATCH --signal=TERM@120
#SBATCH --output=slurm-%A_%a.out
# (--signal=TERM@120: Slurm sends SIGTERM two minutes before the time limit; jaxcl saves a
#  checkpoint and exits, and the requeued or resubmitted task resumes from it.)
# For GPUs add e.g. #SBATCH --gpus-per-task=1; jaxcl uses every device the task sees.

set -euo pipefail
SWEEP=${SWEEP:-sweeps/figure1.toml}
OUT=${OUT:-runs/figure1-array}
exec jaxcl run "$SWEEP" --out "$OUT" --shard auto --no-progress
