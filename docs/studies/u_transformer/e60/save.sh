#!/usr/bin/env bash
# save.sh SRC DEST ARM...: copies each finished unit's config.json and metrics.json, and each arm's plan.json, from SRC to DEST.
set -euo pipefail
src=$1 dest=$2; shift 2
for arm in "$@"; do
  mkdir -p "$dest/$arm"; cp "$src/$arm/plan.json" "$dest/$arm/"
  for unit in "$src/$arm"/fold_*; do
    [ -f "$unit/metrics.json" ] || continue
    mkdir -p "$dest/$arm/$(basename "$unit")"; cp "$unit/config.json" "$unit/metrics.json" "$dest/$arm/$(basename "$unit")/"
  done
  echo "$arm: $(ls -d "$dest/$arm"/fold_* | wc -l) units saved"
done
