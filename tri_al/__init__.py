"""TRI-AL (Fuster et al.): active-learning domain adaptation of the multiscale TRI-CNN tissue classifier.

Public API: ``build_model`` (TRI-CNN) and ``allocate_by_fnr`` (Algorithm 1's
``N_i``); the loop and strategies live in ``tri_al.active_learning``.
Imports keras and numpy only, so it also runs under Keras' JAX backend.

Decisions where the paper is vague:

- Head: the paper says only that the concatenated features go "through the
  classifier" with softmax. Each VGG16 output is global-average pooled
  (512 features each, so any tile size divisible by 32 works), the 1536
  concatenated features pass dropout 0.5 -> Dense(1024, ReLU) -> dropout
  0.5 -> Dense(5, softmax). At width 1.0 that is 1.58M head parameters on
  3 x 14.71M backbone parameters (45.72M in all).
- Inputs are RGB in [0, 1]; the model scales them to 0-255 and subtracts
  the ImageNet channel means in-graph, so served and trained inputs match.
  (Keras' ImageNet VGG16 file was trained on BGR input; loaded through
  ``backbone_weights`` it is a starting point for fine-tuning all layers,
  as the paper does, not a frozen feature extractor.)
- ``width`` < 1 (deviation, for CPU-sized experiments): every VGG16 width and
  the head's 1024 units are multiplied by it; the layout (13 convolutions,
  5 poolings) is VGG16's. ``width=1.0`` is ``keras.applications.VGG16``
  itself, with weights only from a local file (``backbone_weights``).
- ``ITER`` trains J = 5 rounds: on X0, then after each of 4 draws of S.
  ``OOD`` draws until a class pool cannot provide its N_i, takes what is
  left, trains once more and stops. ``ENT`` draws 1.5 S candidates shared
  by the class distribution of the whole training set and keeps the S of
  highest predictive entropy, for J rounds.
- FNR is ``1 - recall`` per class on the validation slides; a class absent
  from them has FNR 0. Draws within a class are uniform at random.
- Every round starts a fresh SGD optimizer from the previous round's weights
  (the paper retrains by transfer, section III), so a resumed round is the
  same computation as an uninterrupted one.
"""

from tri_al.active_learning import allocate_by_fnr
from tri_al.model import INPUT_NAMES, build_model

__all__ = ["INPUT_NAMES", "allocate_by_fnr", "build_model"]
