#!/usr/bin/env bash
# The amended U-Transformer study's figures, from its cv folders (the study folder S, or the copies here):
#   docs/studies/u_transformer/e60/report.sh [S]      default S: this file's folder
# The H1 control, H1, Table 1's form (Dice, precision, recall) and Table 2's form (Dice per organ, paired).
set -euo pipefail
S=${1:-$(dirname "$0")}
export TF_CPP_MIN_LOG_LEVEL=2
zoo=${ZOO:-zoo}
H1=spleen,kidney_right,kidney_left,pancreas
echo "## H1 control: 16 training cases against 4"
$zoo compare $S/unet_4cases $S/unet --classes $H1
echo; echo "## H1: the U-Transformer against the U-Net"
$zoo compare $S/unet $S/u_transformer --classes $H1
echo; echo "## Table 1 form, every organ"
$zoo compare $S/unet $S/u_transformer --metrics dice,precision,recall | sed -n '1,5p'
echo; echo "## Table 2 form: Dice per organ, U-Transformer - U-Net, paired"
for organ in liver spleen kidney_right kidney_left stomach gallbladder pancreas; do
  printf '%s: ' $organ; $zoo compare $S/unet $S/u_transformer --classes $organ | tail -1
done
