#!/usr/bin/env bash
# Issue 36's EAS U-Net study (docs/results.md, "EAS U-Net against the U-Net, at a size its pyramid reaches"), as
# pre-registered, CPU version: the cohort, each arm's learning-rate sweep (fold 1, seed 300), the two arms' 5 folds
# side by side (interleaved in time on one machine), the 2-case control, then the tests. Rerunning resumes: the
# sweeps' runs and the cv folders skip what finished (a unit resumes from its last epoch where its backup is there).
# Usage: ZOO="python -m common.cli" PY=python docs/studies/eas2/run.sh STUDY_FOLDER   (PYTHONPATH: the snapshot)
# SEEDS=0,100,200 runs the full study (15 units an arm; ~3x the CPU version's cost: a GPU machine's job).
set -euo pipefail
S=${1:?the study folder}
ZOO=${ZOO:-zoo}
PY=${PY:-python}
SEEDS=${SEEDS:-0}
# Whole 320x320 slices (stride 16: a 20x20 map at the pyramid, the smallest on which its rate-18 taps fall inside),
# the paper's recipe (SGD 0.01, momentum 0.9, weight decay 1e-4, constant rate, flips and rotations) and 50 epochs,
# batch 8 and base width 8 on this CPU, 6 of each fold's training cases and 2 more for the validation loss.
P="--preset eas_unet --base-filters 8 --batch-size 8 --crop-size 320 --epochs 50 --train-cases 8 --validation-cases 2"
TORCH_UNET='{"initialization": "torch"}'  # the U-Net starts from PyTorch's draws, as the EAS U-Net does

stamp() { echo "[$(date -u +%FT%TZ)] $*"; }
[ -f "$S/cohort/volume-0.nii" ] || $ZOO synthetic-ct "$S/cohort" --layout lits --num-cases 30 --seed 0 \
  --shape 320,320,32 --voxel-size 1.1,1.1,5
[ -f "$S/prepared/dataset.json" ] || $ZOO prepare "$S/cohort" "$S/prepared" --preset lits
# Fold 1's held-out cases (crossval.kfold of the prepared ids, split seed 0): the sweeps' test cases.
FOLD1=$($PY -c "import json, sys; from common.train import crossval
ids = [c['id'] if isinstance(c, dict) else c for c in json.load(open(sys.argv[1]))['cases']]
print(','.join(crossval.kfold(ids, 5, 0)[0]))" "$S/prepared/dataset.json")

for model in unet eas_unet; do
  extra=(); [ "$model" = unet ] && extra=("--model-options=$TORCH_UNET")
  stamp "sweep $model"
  [ -f "$S/sweep/$model/sweep.json" ] || $ZOO sweep-lr "$S/sweep/$model" -- train "$S/prepared" RUN --model "$model" \
    $P ${extra[@]+"${extra[@]}"} --test-cases "$FOLD1" --seed 300
done
chosen() { $PY -c "import json, sys; print(json.load(open(sys.argv[1]))['chosen_scale'])" "$S/sweep/$1/sweep.json"; }
LR_UNET=$(chosen unet)
LR_EAS=$(chosen eas_unet)

stamp "arms, side by side"
$ZOO cv "$S/prepared" "$S/unet" --model unet "--model-options=$TORCH_UNET" $P --lr-scale "$LR_UNET" \
  --folds 5 --seeds "$SEEDS" &
$ZOO cv "$S/prepared" "$S/eas_unet" --model eas_unet $P --lr-scale "$LR_EAS" --folds 5 --seeds "$SEEDS" &
wait
stamp "control"
$ZOO cv "$S/prepared" "$S/unet_2cases" --model unet "--model-options=$TORCH_UNET" ${P/--train-cases 8/--train-cases 4} \
  --lr-scale "$LR_UNET" --folds 5 --seeds "$SEEDS"

stamp "tests"
$ZOO compare "$S/unet_2cases" "$S/unet" --classes liver | tee "$S/control.txt"
$ZOO compare "$S/unet" "$S/eas_unet" --classes liver --metrics dice,voe,assd,precision,recall | tee "$S/h1.txt"
stamp "done"
