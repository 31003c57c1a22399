#!/usr/bin/env bash
# Issue 36's U-Transformer study (docs/results.md, "U-Transformer against the U-Net, every unit to the rule"), as
# pre-registered, CPU version: the cohort, each arm's learning-rate sweep (fold 1, seed 300), the two arms' 5 folds
# side by side (interleaved in time on one machine), the 4-case control, then the tests. Rerunning resumes: the
# sweeps' runs and the cv folders skip what finished (a unit resumes from its last epoch where its backup is there).
# Usage: ZOO="python -m common.cli" PY=python docs/studies/ut2/run.sh STUDY_FOLDER   (PYTHONPATH: the snapshot)
# SEEDS=0,100,200 runs the full study (15 units an arm; ~3x the CPU version's cost: a GPU machine's job).
set -euo pipefail
S=${1:?the study folder}
ZOO=${ZOO:-zoo}
PY=${PY:-python}
SEEDS=${SEEDS:-0}
P="--preset u_transformer --base-filters 16 --batch-size 8 --crop-size 128 --epochs 100 --lr-decay 0.985 \
--validation-cases 2"
FOLD1="case_002,case_004,case_006,case_019"  # fold 1's held-out cases (crossval.kfold of the 20 ids, seed 0)

stamp() { echo "[$(date -u +%FT%TZ)] $*"; }
[ -f "$S/cohort/dataset.json" ] || $ZOO synthetic-ct "$S/cohort" --layout context --num-cases 20 --seed 0 \
  --shape 128,128,24
[ -f "$S/prepared/dataset.json" ] || $ZOO prepare "$S/cohort" "$S/prepared"

for model in unet u_transformer; do
  stamp "sweep $model"
  [ -f "$S/sweep/$model/sweep.json" ] || \
    $ZOO sweep-lr "$S/sweep/$model" -- train "$S/prepared" RUN --model "$model" $P --test-cases "$FOLD1" --seed 300
done
chosen() { $PY -c "import json, sys; print(json.load(open(sys.argv[1]))['chosen_scale'])" "$S/sweep/$1/sweep.json"; }

stamp "arms, side by side"
$ZOO cv "$S/prepared" "$S/unet" --model unet $P --lr-scale "$(chosen unet)" --folds 5 --seeds "$SEEDS" &
$ZOO cv "$S/prepared" "$S/u_transformer" --model u_transformer $P --lr-scale "$(chosen u_transformer)" \
  --folds 5 --seeds "$SEEDS" &
wait
stamp "control"
$ZOO cv "$S/prepared" "$S/unet_4cases" --model unet $P --lr-scale "$(chosen unet)" --train-cases 4 --folds 5 \
  --seeds "$SEEDS"

stamp "tests"
H1="--classes spleen,kidney_right,kidney_left,pancreas"
$ZOO compare "$S/unet_4cases" "$S/unet" $H1 | tee "$S/control.txt"
$ZOO compare "$S/unet" "$S/u_transformer" $H1 | tee "$S/h1.txt"
$ZOO compare "$S/unet" "$S/u_transformer" --metrics dice,precision,recall | tee "$S/table1.txt"
stamp "done"
