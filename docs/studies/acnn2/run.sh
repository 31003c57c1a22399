#!/usr/bin/env bash
# Issue 36's ACNN study (docs/results.md, "ACNN against the hourglass, heatmaps trained as long"), as
# pre-registered: the data, each arm's learning-rate sweep on data of its own, 5 seeds of every arm
# interleaved in time, then the tests. Rerunning resumes (every zoo command here resumes its folder).
# Usage: ZOO="python -m common.cli" docs/studies/acnn2/run.sh STUDY_FOLDER   (PYTHONPATH: the snapshot)
set -euo pipefail
S=${1:?the study folder}
ZOO=${ZOO:-zoo}
PY=${PY:-python}
C="--stacks 2 --base-filters 32 --input-size 128 --batch-size 8 --stage-factor 0.05"

stamp() { echo "[$(date -u +%FT%TZ)] $*"; }
[ -d "$S/data_figures" ] || $ZOO synthetic-pose "$S/data_figures" --images 800 --seed 0 --clutter figures
[ -d "$S/data_none" ] || $ZOO synthetic-pose "$S/data_none" --images 800 --seed 0 --clutter none
# The sweep's own data (generator seed 1): its runs never train or validate on the test images.
[ -d "$S/data_sweep" ] || $ZOO synthetic-pose "$S/data_sweep" --images 800 --seed 1 --clutter figures

for model in hourglass acnn; do
  stamp "sweep $model"
  [ -f "$S/sweep/$model/sweep.json" ] || \
    $ZOO sweep-lr "$S/sweep/$model" -- train-pose "$S/data_sweep" RUN $C --model "$model" --seed 100
done
chosen() { $PY -c "import json, sys; print(json.load(open(sys.argv[1]))['chosen_scale'])" "$S/sweep/$1/sweep.json"; }
H=$(chosen hourglass)
A=$(chosen acnn)
stamp "chosen scales: hourglass x$H, acnn x$A"

for seed in 0 1 2 3 4; do
  for arm in hourglass control acnn; do
    case $arm in
      hourglass) data=data_figures; model=hourglass; scale=$H ;;
      control) data=data_none; model=hourglass; scale=$H ;;
      acnn) data=data_figures; model=acnn; scale=$A ;;
    esac
    run="$S/$arm/seed_$seed"
    stamp "$arm seed $seed"
    $ZOO train-pose "$S/$data" "$run" $C --model "$model" --lr-scale "$scale" --seed "$seed"
    [ -f "$run/pckh_valid.json" ] || $ZOO eval-pose "$run" "$S/$data"
  done
  [ -f "$S/acnn/seed_$seed/pictures/mask_contrast.json" ] || \
    $ZOO pose-pictures "$S/acnn/seed_$seed" "$S/data_figures" "$S/acnn/seed_$seed/pictures" --index 0 --mask-contrast
done

stamp "tests"
$ZOO compare-pose "$S/hourglass" "$S/control" | tee "$S/control.txt"
$ZOO compare-pose "$S/hourglass" "$S/acnn" | tee "$S/h1.txt"
for column in "Mean@0.1" "Wri." "Ank." "Elb."; do
  $ZOO compare-pose "$S/hourglass" "$S/acnn" --column "$column" | grep -- " - " | sed "s/^/$column: /"
done | tee "$S/secondary.txt"
stamp "done"
