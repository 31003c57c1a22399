#!/usr/bin/env bash
# Issue 36's TRI-AL study (docs/results.md, "TRI-AL: as good as all the target data, with a third of it"), as
# pre-registered: the data, the source model, each arm's learning-rate sweep, 18 runs of every arm (in three
# chunks of 6, the arms taking turns), then the report. Rerunning resumes (every zoo command here resumes).
# Usage: ZOO="python -m common.cli" PY=python docs/studies/tri_al2/run.sh STUDY_FOLDER   (PYTHONPATH: the snapshot)
set -euo pipefail
S=${1:?the study folder}
ZOO=${ZOO:-zoo}
PY=${PY:-python}
RUNS=18  # stats.tost_runs(1.378, 1.0): the first study's sd of ITER - TRI-SL(100%) in macro F1, margin 1 F1 point
T="--target-split 0.5,0.25,0.25 --iterations 5 --budget 100 --candidates 300 --initial-per-class 20 \
--epochs 30 --patience 3 --learning-rate 1e-3 --momentum 0.9 --batch-size 32"
SRC="$S/source/source/model.keras"
declare -A ARM=(
  [sl100]="--strategy supervised --fractions 1"
  [sl33]="--strategy supervised --fractions 0.3333"
  [sl20]="--strategy supervised --fractions 0.2"
  [iter]="--strategy ITER"
  [random]="--strategy RANDOM"
)
ORDER="sl100 iter random sl33 sl20"

stamp() { echo "[$(date -u +%FT%TZ)] $*"; }
[ -f "$S/slides/slides.json" ] || $ZOO synthetic-slides "$S/slides" --shift hard --slides 8 --target-slides 20 \
  --slide-size 2048,2048 --seed 0
[ -f "$S/triplets/triplets.json" ] || $ZOO triplets "$S/slides" "$S/triplets" --tile-size 32 --max-per-slide 150
# The source model every arm adapts (TRI-CNN on lab A; its folder's one TRI-SL(20%) run is not part of the study).
stamp "source"
$ZOO tri-al "$S/triplets" "$S/source" --strategy supervised --fractions 0.2 --runs 1 --base-filters 8 \
  --head-units 512 --source-epochs 20 $T

for arm in $ORDER; do
  stamp "sweep $arm"
  [ -f "$S/sweep/$arm/sweep.json" ] || \
    $ZOO sweep-lr "$S/sweep/$arm" -- tri-al "$S/triplets" RUN ${ARM[$arm]} --source-model "$SRC" $T --runs 1 --seed 100
done
chosen() { $PY -c "import json, sys; print(json.load(open(sys.argv[1]))['chosen_scale'])" "$S/sweep/$1/sweep.json"; }

for runs in 6 12 $RUNS; do
  for arm in $ORDER; do
    stamp "$arm: runs 0-$((runs - 1))"
    $ZOO tri-al "$S/triplets" "$S/arms/$arm" ${ARM[$arm]} --source-model "$SRC" $T --lr-scale "$(chosen "$arm")" \
      --runs "$runs" --seed 0 > /dev/null
  done
done

stamp "report"
$ZOO tri-al-report $(for arm in $ORDER; do echo "$S/arms/$arm"; done) --margin 1 | tee "$S/report.md"
# The convergence rule on every training's history (each AL round, each TRI-SL run), per arm.
$PY - "$S/arms" $ORDER <<'PY' | tee "$S/convergence.txt"
import pathlib, sys
from common.train import convergence
arms = pathlib.Path(sys.argv[1])
for arm in sys.argv[2:]:
    histories = {str(p.relative_to(arms / arm).parent): p for p in sorted((arms / arm).glob("*/run_*/logs/**/history.csv"))}
    summary = convergence.summary(histories)
    stopped = sum(1 for p in histories.values() if len(p.read_text().splitlines()) - 1 < 30)
    print(f"{arm}: {convergence.describe(summary)}; {stopped} of {len(histories)} trainings stopped early (patience 3)")
print(convergence.RULE)
PY
stamp "done"
