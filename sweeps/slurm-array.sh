#!/bin/bash
# A sweep as a Slurm job array that runs until the whole grid is done, leg after leg: each task
# runs one slice of the grid into the same run directory (on a file system every node mounts).
# Before a task's time limit Slurm sends it SIGUSR1 (--signal=B:USR1@SECONDS; B: because the
# signal must reach the batch shell, which `exec` makes jaxcl itself); jaxcl finishes its chunk,
# saves a checkpoint, records the leg and requeues the task (`scontrol requeue`, at most
# $JAXCL_REQUEUE times), and the next leg resumes from the checkpoint. The task that finishes
# last writes results.jsonl, the manifest and the figures; `jaxcl merge RUN_DIR` does the same
# at any time. Watch it with `jaxcl status RUN_DIR` from any node. Every task must use the same
# count (here 8: --array=0-7). See docs/cluster.md.
#
#   sbatch sweeps/slurm-array.sh                       # the Figure 1 sweep, 8 tasks
#   SWEEP=sweeps/theorem33.toml OUT=runs/theorem33 sbatch --array=0-3 --time=30 sweeps/slurm-array.sh
#
#SBATCH --job-name=jaxcl
#SBATCH --array=0-7
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=02:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --open-mode=append
#SBATCH --output=slurm-%A_%a.out
# (--signal=B:USR1@120: Slurm sends SIGUSR1 about two minutes before the time limit (its timer
#  ticks coarsely: up to a minute earlier); the offset must exceed one chunk (--chunk-seconds,
#  10 s by default) plus saving. --open-mode=append: every leg adds to the same log.)
# For GPUs add e.g. #SBATCH --gpus-per-task=1; jaxcl uses every device the task sees.

set -euo pipefail
SWEEP=${SWEEP:-sweeps/figure1.toml}
OUT=${OUT:-runs/figure1-array}
echo "jaxcl: $(date '+%F %T') task ${SLURM_ARRAY_TASK_ID:-} leg $(( ${SLURM_RESTART_COUNT:-0} + 1 )) on $(hostname)"
# exec: jaxcl replaces the batch shell, so the B: signal reaches it. JAXCL_ARGS: more options.
exec jaxcl run "$SWEEP" --out "$OUT" --shard auto --no-progress \
    --requeue "${JAXCL_REQUEUE:-20}" ${JAXCL_ARGS:-}
