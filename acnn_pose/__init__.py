"""ACNN (Sun et al.): a self-attention stacked hourglass for human pose estimation.

Public API: ``build_model``, the custom layers, the staged training of
section 3.3 and keypoint decoding. Imports keras, numpy and the keras-only
``common.nn`` only, so it also runs under Keras' JAX backend.

Decisions where the paper is vague:

- Base network: Newell's 4-stack hourglass as the princeton-vl / bearpaw code
  lays it out (pre-activation bottleneck residuals, depth-4 hourglasses,
  nearest upsampling). Eq. 1 passes ``f(X_i + hourglass(X_i)) * M_i`` to the
  next stage, so Newell's extra merge of predictions and features back into
  the next stage's input is left out; f is a Residual then a 1x1
  conv-BN-ReLU, as after each of Newell's hourglasses. The stem widths
  (64, 128, 128, 256 at ``features=256``) scale with ``features``.
- The mask head f_c (eq. 2) reads ``X_i + hourglass(X_i)`` like f: a 3x3
  conv-BN-ReLU to C/4 then a 1x1 conv to one channel and a sigmoid (section
  3.2: no BN/ReLU on the 1x1 layers that make heatmaps and masks). Its bias
  starts at 2 (sigmoid 0.88), so switching the masks on in stage B barely
  disturbs the heatmap path trained in stage A. The masks stay soft
  (sigmoid): the paper calls them binary but trains them by back-propagation.
- The heatmap 1x1 convs start from normal(std=0.001) weights, as HRNet's
  heatmap heads do: with Keras' default init the first ~600 steps of a
  small run only unlearned random peaks.
- The last stage makes no mask (no stage follows to gate); a model of S
  stacks outputs S predictions and S - 1 masks.
- The plain baseline (``attention=False``) has no mask heads at all, so its
  parameter count is the hourglass's (4 stacks: 12.65M trainable, 12.71M in all).
- Loss: the sum over stages of the per-stage MSE against the target
  heatmaps (intermediate supervision, section 3.1, eq. 3).
- Staged training (``staged``): stage A forces every mask to ones and
  freezes the mask heads; stage B freezes everything else (and its BN
  statistics); stage C trains all. The baseline runs stages A and C only, so
  its heatmap path gets the same schedule as ACNN's.
- Decoding: argmax plus a quarter pixel toward the higher neighbour (the
  reference code's rule), pixel centres at integer coordinates; heatmap
  pixel u covers image pixels ``4u .. 4u + 3``, so ``x = 4 (u + 0.5) - 0.5``.
"""

from acnn_pose.decode import decode_heatmaps, serving_outputs
from acnn_pose.layers import AttentionMaskGate, Hourglass, Residual, StagePrediction
from acnn_pose.model import OUTPUT_STRIDE, STRIDE, build_model
from acnn_pose.staged import STAGES, Stage, configure_stage, scaled_stages, train_staged

__all__ = [
    "OUTPUT_STRIDE",
    "STAGES",
    "STRIDE",
    "AttentionMaskGate",
    "Hourglass",
    "Residual",
    "Stage",
    "StagePrediction",
    "build_model",
    "configure_stage",
    "decode_heatmaps",
    "scaled_stages",
    "serving_outputs",
    "train_staged",
]
