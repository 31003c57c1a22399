#!/usr/bin/env bash
# Copies what a running issue-36 study has finished into the repository, without weights, so a later session
# resumes it (docs/studies/README.md): each finished sweep run's config.json and history.csv, each sweep.json,
# each cv arm's plan.json (and its summary.md, summary.json and postprocessing.json once the arm is complete) and
# finished units' metrics.json, config.json and history.csv, the tests' .txt output, and the study's CPU logs
# beside its folder (cpu_STUDY.log, cpu_tree_STUDY.log: the CPU time its verdict states).
# Usage: docs/studies/save.sh STUDY_FOLDER DEST   (e.g. /work/studies/ut2 docs/studies/ut2)
set -euo pipefail
S=${1:?the study folder}
D=${2:?the destination in docs/studies}
for run in "$S"/sweep/*/lr_x*; do
  [ -f "$run/model.keras" ] || continue  # the run finished
  dest="$D/sweep/$(basename "$(dirname "$run")")/$(basename "$run")"
  mkdir -p "$dest" && cp "$run/config.json" "$run/history.csv" "$dest/"
done
for sweep in "$S"/sweep/*/sweep.json; do
  [ -f "$sweep" ] || continue
  mkdir -p "$D/sweep/$(basename "$(dirname "$sweep")")" && cp "$sweep" "$D/sweep/$(basename "$(dirname "$sweep")")/"
done
for plan in "$S"/*/plan.json; do
  [ -f "$plan" ] || continue
  arm=$(dirname "$plan"); mkdir -p "$D/$(basename "$arm")" && cp "$plan" "$D/$(basename "$arm")/"
  for done in summary.md summary.json postprocessing.json; do  # written once every unit of the arm finished
    [ -f "$arm/$done" ] && cp "$arm/$done" "$D/$(basename "$arm")/"
  done
  for unit in "$arm"/*/; do
    [ -f "$unit/metrics.json" ] || continue  # the unit finished
    dest="$D/$(basename "$arm")/$(basename "$unit")"
    mkdir -p "$dest" && cp "$unit/metrics.json" "$unit/config.json" "$unit/history.csv" "$dest/"
  done
done
for out in "$S"/*.txt; do [ -f "$out" ] && cp "$out" "$D/"; done
for log in "$(dirname "$S")/cpu_$(basename "$S").log" "$(dirname "$S")/cpu_tree_$(basename "$S").log"; do
  [ -f "$log" ] && cp "$log" "$D/"
done
echo "saved $(find "$D" -type f | wc -l) files under $D"
