#!/usr/bin/env bash
# issue 18 U-Transformer study, fourth amendment (60 epochs, decay 0.975): the two U-Net arms side by side, then the U-Transformer arm. Snapshot f06e774.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=1 PYTHONPATH=/work/studies/snap_f06e774
Z=/work/main/.venv/bin/zoo
S=/work/studies/ut
P="--preset u_transformer --base-filters 16 --batch-size 8 --crop-size 128 --epochs 60 --lr-decay 0.975 --folds 5 --seeds 0,100,200"
echo "$(date +%T) unet_noise40 and unet"
$Z cv $S/prepared_n40 $S/e60/unet_noise40 --model unet $P >> $S/e60/log_unet_noise40.txt 2>&1 &
$Z cv $S/prepared $S/e60/unet --model unet $P >> $S/e60/log_unet.txt 2>&1 &
wait
echo "$(date +%T) u_transformer"; $Z cv $S/prepared $S/e60/u_transformer --model u_transformer $P >> $S/e60/log_u_transformer.txt 2>&1
echo "$(date +%T) done"
