"""The ACNN network (Sun et al., section 3, Fig. 3 and 4) and its base, Newell's stacked hourglass.

Stem (section 3.2, "Inference"): 7x7/2 conv - BN - ReLU, Residual, 2x2
max-pool, Residual, Residual: 256x256 -> 64x64 features. The 7x7/2 conv pads 3
on every side as Newell's PyTorch and Torch code do (``_conv``). Then per stage i,
with ``Y_i = hourglass(X_i)`` (= ``X_i + theta(X_i)``: the hourglass' top
branch carries X_i through identity skips):

- ``F_i``: a Residual and a 1x1 conv-BN-ReLU on Y_i (Newell's ``features``);
- ``H_i``: 1x1 conv to K heatmaps (no BN/ReLU, section 3.2);
- ``P_i``: eq. 4 (``StagePrediction``);
- Newell's merge: ``X_i + fc'(F_i) + score'(H_i)``, two 1x1 convs back to
  ``base_filters`` channels (``merge_features_i``, ``merge_heatmaps_i``);
- ``M_i = f_c(Y_i)``, eq. 2: 3x3 conv-BN-ReLU to C/4, 1x1 conv to one
  channel, sigmoid (float32);
- ``X_{i+1} = merge_i * M_i``, eq. 1 (``AttentionMaskGate``).
"""

from __future__ import annotations

import functools
import warnings

import keras
from keras import layers

from acnn_pose.layers import AttentionMaskGate, Hourglass, Residual, StagePrediction
from acnn_pose.recipe import RECIPE
from common.nn.built import BuiltModel, builder_of, register_builder
from common.nn.initializers import torch_defaults
from common.nn.ops import batch_norm, check_input_shape, check_positive_int

HOURGLASS_DEPTH = 4
OUTPUT_STRIDE = 4  # the stem's: 256x256 images give 64x64 heatmaps
STRIDE = OUTPUT_STRIDE * 2**HOURGLASS_DEPTH  # image sides must be multiples of this
# Heatmap convs start near zero (HRNet's normal(std=0.001)): with the default init the
# first hundreds of steps only unlearn random peaks (measured: loss 0.30 -> 0.006 in ~600 steps).
HEATMAP_STDDEV = 0.001
# Mask logits start with bias 2 (sigmoid 0.88 where the kernel's term is small), nearly open: when
# stage B switches the masks on, the frozen heatmap path first sees nearly the features of stage A.
MASK_BIAS_INIT = 2.0


def _check_config(input_shape, num_stacks, num_joints, base_filters):
    check_input_shape(input_shape, STRIDE, f"stride {OUTPUT_STRIDE} stem, then {HOURGLASS_DEPTH} poolings")
    check_positive_int(num_stacks, "num_stacks")
    check_positive_int(num_joints, "num_joints")
    if isinstance(base_filters, bool) or not isinstance(base_filters, int) or base_filters < 8 or base_filters % 8:
        raise ValueError(f"base_filters must be a positive multiple of 8, got {base_filters!r}")


def _conv(x, filters: int, kernel: int, name: str, strides: int = 1, **kwargs):
    """Newell's ``Conv``: PyTorch's ``padding=(k - 1) // 2`` on every side, and PyTorch's initialisation.

    With stride 1 and an odd kernel that is Keras' "same". With stride 2 on an
    even side Keras' "same" pads (2, 3) for a 7x7 kernel where PyTorch pads
    (3, 3): every feature map would sit one input pixel off Newell's.
    """
    padding = "same"
    if strides > 1:
        x = layers.ZeroPadding2D((kernel - 1) // 2, name=f"{name}_pad")(x)
        padding = "valid"
    init = {**torch_defaults((kernel, kernel, x.shape[-1], filters)), **kwargs}
    return layers.Conv2D(filters, kernel, strides=strides, padding=padding, name=name, **init)(x)


def _conv_bn_relu(x, filters: int, kernel: int, name: str, strides: int = 1):
    x = _conv(x, filters, kernel, f"{name}_conv", strides)
    x = batch_norm(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _stem(x, base_filters: int):
    # The reference widths 64 / 128 / 128 / 256 at base_filters=256, scaled with base_filters.
    x = _conv_bn_relu(x, base_filters // 4, 7, "stem", strides=2)  # Newell: pads 3 on every side
    x = Residual(base_filters // 2, name="stem_res1")(x)
    x = layers.MaxPooling2D(2, name="stem_pool")(x)
    x = Residual(base_filters // 2, name="stem_res2")(x)
    return Residual(base_filters, name="stem_res3")(x)


def _mask_head(x, base_filters: int, stage: int):
    """Eq. 2, f_c: every layer named ``mask_<stage>_*`` (staged training freezes them by name)."""
    m = _conv_bn_relu(x, base_filters // 4, 3, f"mask_{stage}")
    m = _conv(m, 1, 1, f"mask_{stage}_logits", bias_initializer=keras.initializers.Constant(MASK_BIAS_INIT))
    return layers.Activation("sigmoid", dtype="float32", name=f"mask_{stage}_sigmoid")(m)


def _merge(x, feature, heatmap, base_filters: int, stage: int):
    """Newell's next-stage input ``X_i + fc'(F_i) + score'(H_i)``: the stage's input, features and heatmaps."""
    merged_features = _conv(feature, base_filters, 1, f"merge_features_{stage}")
    merged_heatmaps = _conv(heatmap, base_filters, 1, f"merge_heatmaps_{stage}")
    return layers.Add(name=f"merge_{stage}")([x, merged_features, merged_heatmaps])


def build_model(input_shape=(RECIPE.input_size, RECIPE.input_size, 3), num_stacks: int = RECIPE.num_stacks,
                num_joints: int = 16, base_filters: int = RECIPE.base_filters, attention: bool = True, *,
                features: int | None = None) -> keras.Model:
    """Builds ACNN (``attention=True``) or the plain stacked hourglass it is based on.

    Args:
        input_shape: (height, width, channels); sides None or multiples of
            ``STRIDE`` (64). Heatmaps are 4 times smaller.
        num_stacks: hourglass stages (``RECIPE.num_stacks``, the paper's 4).
        num_joints: K heatmaps (MPII: 16).
        base_filters: channels of the hourglasses, Newell's ``inp_dim``; the stem's
            widths are quarters and halves of it (``RECIPE.base_filters``, the paper's 256).
        attention: add the mask heads and gates of eq. 1 and 2; without, it
            is Newell's network (``X_{i+1}`` is the merge, ungated) and
            ``P_i = H_i``.
        features: ``base_filters``' old name, kept for one release with a
            ``DeprecationWarning`` (and read from files that recorded it).

    Returns:
        A functional model (``common.nn.built.BuiltModel``: its file records
        "acnn" or "hourglass" and the other arguments) whose outputs are a
        list: the stage predictions
        ``prediction_1`` .. ``prediction_<num_stacks>`` (B, H/4, W/4, K),
        then, with attention, the masks ``mask_1`` .. ``mask_<num_stacks-1>``
        (B, H/4, W/4, 1) that gate the next stage; all float32. The last stage
        makes no mask: nothing follows it.

    Example:
    >>> model = build_model(input_shape=(64, 64, 3), num_stacks=2, base_filters=16)
    >>> model.output_names
    ['prediction_1', 'prediction_2', 'mask_1']
    """
    base_filters = _renamed_width(base_filters, features)
    input_shape = tuple(input_shape)
    _check_config(input_shape, num_stacks, num_joints, base_filters)
    inputs = keras.Input(shape=input_shape, name="image")
    x = _stem(inputs, base_filters)
    predictions, masks, previous, mask = [], [], None, None
    for stage in range(1, num_stacks + 1):
        y = Hourglass(base_filters, HOURGLASS_DEPTH, name=f"hourglass_{stage}")(x)  # X_i + theta(X_i)
        feature = Residual(base_filters, name=f"stage_{stage}_res")(y)
        feature = _conv_bn_relu(feature, base_filters, 1, f"stage_{stage}_fc")  # F_i, eq. 1's f
        heatmap = _conv(feature, num_joints, 1, f"heatmap_{stage}", bias_initializer="zeros",  # H_i
                        kernel_initializer=keras.initializers.RandomNormal(stddev=HEATMAP_STDDEV))
        parts = [heatmap] if mask is None else [heatmap, previous, mask]
        previous = StagePrediction(name=f"prediction_{stage}")(parts)  # P_i, eq. 4 (P_i = H_i without masks)
        predictions.append(previous)
        if stage == num_stacks:
            break
        x = _merge(x, feature, heatmap, base_filters, stage)
        if attention:
            x, mask = AttentionMaskGate(name=f"gate_{stage}")([x, _mask_head(y, base_filters, stage)])  # eq. 1
            masks.append(layers.Identity(dtype="float32", name=f"mask_{stage}")(mask))
    name = "acnn" if attention else "hourglass"
    arguments = dict(input_shape=list(input_shape), num_stacks=num_stacks, num_joints=num_joints,
                     base_filters=base_filters)
    return BuiltModel(name, arguments, inputs=inputs, outputs=predictions + masks, name=name)


def _renamed_width(base_filters, features):
    """``base_filters``, or the deprecated ``features`` given in its place (issue 37: one width name in the zoo)."""
    if features is None:
        return base_filters
    # stacklevel 3: the line that called build_model, not this helper
    warnings.warn("build_model: features is deprecated and goes in the next release; use base_filters",
                  DeprecationWarning, stacklevel=3)
    if base_filters not in (RECIPE.base_filters, features):  # two widths given: which one was meant is unknown
        raise ValueError(f"features: the deprecated name of base_filters; give base_filters only, got "
                         f"base_filters={base_filters!r} and features={features!r}")
    return features


# ``attention`` is in the name, not the arguments: a file says "acnn" or "hourglass", as the registry does.
for _name, _attention in (("acnn", True), ("hourglass", False)):
    register_builder(_name, functools.partial(build_model, attention=_attention))


def num_stacks_of(model: keras.Model) -> int:
    """The hourglass stages of a model ``build_model`` made: its recorded ``num_stacks``, or, in a file saved
    before models recorded their arguments, its ``prediction_<i>`` outputs (the names given above)."""
    if builder_of(model) in ("acnn", "hourglass"):
        return model.arguments["num_stacks"]
    return sum(name.startswith("prediction_") for name in model.output_names)
