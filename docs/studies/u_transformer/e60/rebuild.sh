#!/usr/bin/env bash
# Rebuilds the U-Transformer study folder on a new machine and resumes the study, from a checkout of main:
#   docs/studies/u_transformer/e60/rebuild.sh          (run from the repository root; make .venv/.installed-stamp first)
# Each step is skipped when its result is there: the snapshot f06e774, the cohort (checked against the saved
# units' scores by verify_cohort.py, or the script stops), the prepared shards, the saved units. Then e60b.sh
# runs in the background (finished units are skipped): progress in S/e60/log_u_transformer.txt.
# STUDIES=/tmp/x rebuilds under another folder to try the steps, and stops there (e60b.sh runs in /work/studies/ut).
set -euo pipefail
repo=$(pwd) here=$(cd "$(dirname "$0")" && pwd) studies=${STUDIES:-/work/studies}; S=$studies/ut
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=$studies/snap_f06e774
zoo=$repo/.venv/bin/zoo
mkdir -p "$S/e60"
[ -d "$studies/snap_f06e774" ] || git worktree add "$studies/snap_f06e774" f06e774
cd "$S"
[ -f cohort/dataset.json ] || "$zoo" synthetic-ct cohort --layout context --num-cases 20 --seed 0 --shape 128,128,24
for arm in unet unet_4cases u_transformer; do "$repo/.venv/bin/python" "$here/verify_cohort.py" cohort "$here/$arm"; done
[ -d prepared ] || "$zoo" prepare cohort prepared
for arm in unet unet_4cases u_transformer; do
  mkdir -p "e60/$arm"; [ -f "e60/$arm/plan.json" ] || cp "$here/$arm/plan.json" "e60/$arm/"
  for unit in "$here/$arm"/fold_*; do [ -d "e60/$arm/$(basename "$unit")" ] || cp -r "$unit" "e60/$arm/"; done
done
if [ "$studies" != /work/studies ]; then echo "rebuilt under $studies; e60b.sh not started"; exit 0; fi
if pgrep -f "zoo cv" > /dev/null; then echo "a zoo cv runs already: not started again"; exit 0; fi
cp "$here/e60b.sh" "$S/e60b.sh"
nohup setsid ./e60b.sh >> e60b.log 2>&1 < /dev/null &
echo "e60b.sh started; progress: tail $S/e60/log_u_transformer.txt"
