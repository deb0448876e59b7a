#!/bin/sh
# Lemma C.1's init counts (|M_j|, |M_j*|, N_i(0)) far past the trained d, with no training
# (jaxcl init-stats: rows of A = M^T w_i(0) drawn in neuron chunks), for the theorem33 study's
# series: C_m 1.5 at every ratio to d = 4096 (m = 262,144), and C_m 2 at ratio 0.75 to d = 1024
# (m = 1,048,576; d = 2048 would draw 8.6e9 normals per seed). Then the report of each.
#   sh sweeps/init-stats.sh        (writes runs/init-stats-*, results/init-stats-*)
set -e
JAXCL=${JAXCL:-jaxcl}
$JAXCL init-stats --out runs/init-stats-c15 --C_m 1.5 --ratios 0.25 0.5 0.75 1.0 \
  --d 32 64 128 256 512 1024 2048 4096 --seeds 2
$JAXCL init-stats --out runs/init-stats-c2 --C_m 2 --ratios 0.75 --d 32 64 128 256 512 1024 --seeds 2
$JAXCL report runs/init-stats-c15 --out results/init-stats-c15
$JAXCL report runs/init-stats-c2 --out results/init-stats-c2
