"""ACNN (Sun et al.): a self-attention stacked hourglass for human pose estimation.

Public API: ``build_model``, the custom layers, ``RECIPE`` (the paper's
network size and batch, ``acnn_pose.recipe``), the staged training of section
3.3 (``train_staged``, or by hand with ``model.fit``: ``training_model``,
eq. 3's ``stacked_mse``, ``configure_stage``, ``STAGES``; see
``acnn_pose.staged``) and keypoint decoding. Imports keras, numpy and the
keras-only ``common.nn`` only, so it also runs under Keras' JAX backend.

Decisions where the paper is vague:

- Base network: Newell's 4-stack hourglass as the princeton-vl / bearpaw code
  lays it out (pre-activation bottleneck residuals, depth-4 hourglasses,
  nearest upsampling), merges included: after stage i Newell feeds the next
  stage ``X_i + fc'(F_i) + score'(H_i)`` (1x1 convs of the stage's features
  and of its heatmaps back to ``base_filters`` channels). F_i is a Residual then
  a 1x1 conv-BN-ReLU on the hourglass output. The stem widths (64, 128, 128,
  256 at ``base_filters=256``, Newell's ``inp_dim``) scale with ``base_filters``.
- Eq. 1 with Newell's merges: ``X_{i+1} = (X_i + fc'(F_i) + score'(H_i)) * M_i``.
  The paper follows Newell's Torch code ("Our implementation follows [15]
  using Torch") and says the mask selects "the input feature maps" of the
  next stage, so that "only the selected regions will be passed to the
  subsequent stages": the mask gates the whole next-stage input, the
  identity path X_i (Fig. 3's dotted lines) included, not F_i alone. Eq. 1's
  ``X_i + theta(X_i)`` is the hourglass output (its top branch carries X_i
  through identity skips), read by both f and f_c (eq. 2). With the masks at
  ones (stage A, or ``attention=False``) the network is exactly Newell's.
- Arithmetic of the original framework (Torch7 / PyTorch), not Keras' defaults
  (SPEC, "Matching the original implementation"; ``docs/fidelity.md``):
  BatchNorm epsilon 1e-5 and momentum 0.1 (Keras' momentum 0.9); the stem's
  7x7 stride-2 convolution pads 3 on every side as PyTorch's ``padding=3``
  (Keras' "same" pads (2, 3) on an even side, which shifted every feature map
  one input pixel off Newell's: 9-11% off his outputs); every other
  convolution has stride 1 and an odd kernel, where "same" is symmetric, and
  the 2x2 max-pools and nearest upsampling have no padding. Every convolution
  starts from PyTorch's default initialisation, U(+-1/sqrt(fan_in)) for
  weights and biases (``common.nn.initializers``), but the two choices below
  (heatmap kernels, mask bias). princeton-vl's released checkpoints load with
  ``zoo convert hourglass`` and give that code's outputs (to 1e-6 of their
  scale, ``tests/common/convert/test_hourglass.py``).
- The mask head f_c (eq. 2) reads the hourglass output like f: a 3x3
  conv-BN-ReLU to C/4 then a 1x1 conv to one channel and a sigmoid (section
  3.2: no BN/ReLU on the 1x1 layers that make heatmaps and masks). Its bias
  starts at 2 (sigmoid 0.88, spread by the kernel's term), so switching the
  masks on in stage B barely disturbs the heatmap path trained in stage A.
  The masks stay soft (sigmoid): the paper calls them binary but trains them
  by back-propagation.
- The heatmap 1x1 convs start from normal(std=0.001) weights and zero biases,
  as HRNet's heatmap heads do: with Keras' default init the first ~600 steps
  of a small run only unlearned random peaks.
- The last stage makes no mask (no stage follows to gate); a model of S
  stacks outputs S predictions and S - 1 masks.
- The plain baseline (``attention=False``) has no mask heads at all, so its
  parameter count is Newell's hourglass' (4 stacks, base_filters 256, 16 joints:
  12,919,488 in all, 12,858,304 trainable).
- Loss: the sum over stages of the per-stage MSE against the target
  heatmaps (intermediate supervision, section 3.1, eq. 3).
- Staged training (``staged``): stage A forces every mask to ones and
  freezes the mask heads; stage B freezes everything else (and its BN
  statistics); stage C trains all. RMSprop with Torch7's rule (``Stage.optimizer``:
  alpha 0.99, eps 1e-8 outside the square root), as the paper's Torch code.
  The baseline runs stages A and C only, so its heatmap path gets the same
  schedule as ACNN's.
- What stage B can learn: with the heatmap path frozen, eq. 4 makes
  ``P_{i+1}`` roughly the per-pixel blend ``M_i H_{i+1} + (1 - M_i) P_i`` of
  two predictions trained to the same targets, so the masks can move the loss
  only by about the gap between consecutive stages. In the short run of
  ``docs/results.md`` every mask from all-zeros to a per-pixel oracle spans
  5.26e-3 to 4.97e-3 of a 5.0e-3 loss; the masks start at 5.16e-3 and reach
  5.01e-3 in stage B's first three steps (Torch's RMSprop steps ~10x the rate
  at first), 5.00e-3 at its end: the per-epoch loss looks flat although the
  masks learn (``tests/acnn_pose/test_staged.py`` checks that they follow eq.
  4's gradient where it is large).
- Decoding: argmax plus a quarter pixel toward the higher neighbour (the
  reference code's rule), pixel centres at integer coordinates; heatmap
  pixel u covers image pixels ``4u .. 4u + 3``, so ``x = 4 (u + 0.5) - 0.5``.
"""

from acnn_pose.decode import decode_heatmaps, serving_outputs
from acnn_pose.layers import AttentionMaskGate, Hourglass, Residual, StagePrediction
from acnn_pose.model import OUTPUT_STRIDE, STRIDE, build_model
from acnn_pose.recipe import RECIPE, PoseRecipe
from acnn_pose.staged import (
    STAGES,
    Stage,
    configure_stage,
    scaled_stages,
    stacked_mse,
    train_staged,
    training_model,
)

# What an exported model card says of the paper (common.serve.card; MONAI bundle names): its authors, its reference
# and that of the stacked hourglass it builds on (also the plain `hourglass` model).
PAPER = {
    "authors": "Guanxiong Sun, Chenqin Ye, Kuanquan Wang",
    "references": [
        "Sun G., Ye C., Wang K. Focus On What's Important: Self-Attention Model for Human Pose Estimation (ACNN).",
        "Newell A., Yang K., Deng J. Stacked Hourglass Networks for Human Pose Estimation. ECCV 2016.",
    ],
}

__all__ = [
    "OUTPUT_STRIDE",
    "PAPER",
    "RECIPE",
    "STAGES",
    "STRIDE",
    "AttentionMaskGate",
    "Hourglass",
    "PoseRecipe",
    "Residual",
    "Stage",
    "StagePrediction",
    "build_model",
    "configure_stage",
    "decode_heatmaps",
    "scaled_stages",
    "serving_outputs",
    "stacked_mse",
    "train_staged",
    "training_model",
]
