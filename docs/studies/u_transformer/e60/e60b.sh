#!/usr/bin/env bash
# issue 18 U-Transformer study, fifth amendment: the baseline U-Net and its 4x-data control side by side;
# the U-Transformer arm only if the control separated (p < 0.05, baseline ahead). Snapshot f06e774.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=1 PYTHONPATH=/work/studies/snap_f06e774
Z=/work/main/.venv/bin/zoo
S=/work/studies/ut
P="--preset u_transformer --base-filters 16 --batch-size 8 --crop-size 128 --epochs 60 --lr-decay 0.975 --folds 5 --seeds 0,100,200"
C="--classes spleen,kidney_right,kidney_left,pancreas"
echo "$(date +%T) unet_4cases and unet"
$Z cv $S/prepared $S/e60/unet_4cases --model unet --train-cases 4 $P >> $S/e60/log_unet_4cases.txt 2>&1 &
$Z cv $S/prepared $S/e60/unet --model unet $P >> $S/e60/log_unet.txt 2>&1 &
wait
$Z compare $S/e60/unet_4cases $S/e60/unet $C | tee $S/e60/control.txt
if ! python3 - $S/e60/control.txt <<'PY'
import re, sys
line = [l for l in open(sys.argv[1]) if "paired t-test" in l][-1]
difference, p, n = float(re.search(r"difference ([-+][\d.]+)", line)[1]), float(re.search(r"p = ([\d.e-]+)", line)[1]), int(re.search(r"n = (\d+)", line)[1])
sys.exit(0 if n == 15 and difference > 0 and p < 0.05 else 1)
PY
then echo "$(date +%T) the control did not separate: the U-Transformer arm is not run"; exit 0; fi
echo "$(date +%T) u_transformer"; $Z cv $S/prepared $S/e60/u_transformer --model u_transformer $P >> $S/e60/log_u_transformer.txt 2>&1
echo "$(date +%T) done"
