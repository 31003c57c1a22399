"""TRI-AL (Fuster et al.): active-learning domain adaptation of the multiscale TRI-CNN tissue classifier.

Public API: ``build_model`` (TRI-CNN), its layer ``VGG16Preprocess``,
``TrainConfig`` (the paper's training recipe, for ``model.fit`` too: ``tri_al.training.sgd``
is its optimizer) and ``allocate_by_fnr`` (Algorithm 1's ``N_i``); the loop lives in
``tri_al.active_learning``, its query strategies in ``tri_al.strategies``,
training one model in ``tri_al.training``.
Imports keras and numpy only, so it also runs under Keras' JAX backend.

Decisions where the paper is vague:

- TRI-CNN as the original code builds it (Wetteland et al.'s
  multiscale-tissue-segmentation-for-urothelial-carcinoma, ``get_tri_scale_model``
  with ``base_model_pooling='avg'`` and ``layer_config='config2_drop'``; TRI-AL's
  own ActiveLearning_TissueSegmentation, ``active_learning_train.py``): each
  VGG16 ends in global average pooling (512 features, so any tile size
  divisible by 32 works), the three are concatenated (1536) and classified by
  Dense(4096, ReLU) -> dropout -> Dense(4096, ReLU) -> dropout -> softmax,
  dropout 0.4 as in TRI-AL's script. At ``base_filters`` 64: 3 x 14,714,688 backbone
  and 23,097,349 head parameters, 67,241,413 in all. The original concatenates
  40x, 10x, 2.5x; we keep the inputs' order (2.5x, 10x, 40x), which only
  permutes the first dense layer's rows; the converter of the original's
  weights (``common.convert.tri_cnn``, ``zoo convert``) permutes them back and
  drops the original's sixth, unused "background" output (index 0), so the
  zoo's 5 probabilities are the original's renormalised over the 5 tissues.
- Framework: the original is Keras 2, and so is the arithmetic followed here:
  VGG16's 3x3 stride-1 'same' convolutions and 2x2 valid max-poolings (no
  asymmetric padding anywhere, so nothing differs from Keras 2), Keras'
  default initialisation (glorot_uniform, zero biases) kept.
- Preprocessing: inputs are float32 RGB in [0, 1], as the triplets are fed
  (uint8 / 255), served and exported; ``VGG16Preprocess`` turns them in the
  graph into what the VGG16s see. The default, ``preprocessing="raw"``,
  follows the original code, which feeds raw 0-255 RGB (its mean subtraction
  and RGB->BGR calls are commented out) even from ImageNet weights: ``255 x``,
  so the original's converted weights give its outputs. ``"imagenet"`` is
  ``keras.applications.vgg16.preprocess_input(255 x)`` (BGR, 0-255, ImageNet
  mean subtracted), what ImageNet's VGG16 weights were trained on. (SPEC first
  made ImageNet's the default; it was corrected to the original's.)
- Training (``TrainConfig``, the recipe of paper 004 section III): SGD lr 1.5e-4 (paper III;
  TRI-AL's script has 1.5e-5), momentum 0.9 with Nesterov and Keras 2's
  ``decay=1e-6`` (the original's optimizer), batch 128 (the original's),
  early stopping on validation loss with patience 5 (paper; the script: 3),
  the best epoch's weights kept (the script's ``ModelCheckpoint``). Where the
  paper's text and its code differ, the text is the default (SPEC).
- ``base_filters`` < 64 and a smaller ``head_units`` (deviations, for CPU-sized
  experiments): ``base_filters`` is the first block's width and the blocks'
  are 1, 2, 4, 8, 8 times it (VGG16's 64, 128, 256, 512, 512), the layout
  (13 convolutions, 5 poolings) is VGG16's. ``base_filters=64`` is
  ``keras.applications.VGG16`` itself, with weights only from a local file
  (``backbone_weights``). The name is the zoo's for the width every other
  width is a multiple of (U-Net: its first level); ``width``, the multiplier
  this took before (``base_filters = 64 x width``), is deprecated and goes in
  the next release; files saved with it still load.
- ``ITER`` trains J = 5 rounds: on X0, then after each of 4 draws of S.
  ``OOD`` draws until a class pool cannot provide its N_i, takes what is
  left, trains once more and stops. ``ENT`` draws 1.5 S candidates shared
  by the class distribution of the whole training set and keeps the S of
  highest predictive entropy, for J rounds.
- FNR is ``1 - recall`` per class on the validation slides; a class absent
  from them has FNR 0. Draws within a class are uniform at random.
- Every round starts a fresh SGD optimizer (momenta and ``decay``'s step
  count at zero) from the previous round's weights (the paper retrains by
  transfer, section III), so a resumed round is the same computation as an
  uninterrupted one. TRI-AL's script recompiles with the same optimizer
  object, whose state carries over; its comment says the intent was a reset.
"""

from tri_al.model import INPUT_NAMES, VGG16Preprocess, build_model
from tri_al.strategies import allocate_by_fnr
from tri_al.training import TrainConfig

# What an exported model card says of the paper (common.serve.card; MONAI bundle names): its authors, its reference
# and that of TRI-CNN, the network it adapts (its reference [5]).
PAPER = {
    "authors": "Saul Fuster, Farbod Khoraminia, Trygve Eftestøl, Tahlita C.M. Zuiverloon, Kjersti Engan",
    "references": [
        "Fuster S., Khoraminia F., Eftestøl T., Zuiverloon T.C.M., Engan K. Active Learning Based Domain Adaptation "
        "for Tissue Segmentation of Histopathological Images (TRI-AL).",
        "Wetteland R., Engan K., Eftestøl T., Kvikstad V., Janssen E.A. A multiscale approach for whole-slide image "
        "segmentation of five tissue classes in urothelial carcinoma slides. Technology in Cancer Research & "
        "Treatment, vol. 19, 1533033820946787, 2020.",
    ],
}

__all__ = ["INPUT_NAMES", "PAPER", "TrainConfig", "VGG16Preprocess", "allocate_by_fnr", "build_model"]
