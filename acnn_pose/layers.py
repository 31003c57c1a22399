"""Blocks of the attention stacked hourglass (ACNN, Sun et al., section 3).

``Residual`` and ``Hourglass`` are the stacked-hourglass blocks of Newell et
al. (2016), the paper's base network (section 3.1), laid out as the
princeton-vl / bearpaw reference code. ``AttentionMaskGate`` is eq. 1 (the
mask selects the features passed on) and ``StagePrediction`` eq. 4 (each
stage's prediction adds back the regions the previous mask discarded).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from common.nn.initializers import torch_defaults  # Newell's code: PyTorch's default initialisation
from common.nn.ops import batch_norm, check_positive_int  # BN: Torch's momentum and epsilon


@keras.saving.register_keras_serializable(package="acnn_pose")
class Residual(keras.layers.Layer):
    """Pre-activation bottleneck: BN-ReLU-1x1 (C/2), BN-ReLU-3x3 (C/2), BN-ReLU-1x1 (C), plus the skip.

    The skip is the identity when the input already has ``filters`` channels,
    else a 1x1 convolution (Newell et al., 2016, Fig. 4).

    Args:
        filters: output channels C (even).

    Example:
    >>> import numpy as np
    >>> tuple(Residual(8)(np.zeros((1, 4, 4, 3), "float32")).shape)
    (1, 4, 4, 8)
    """

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        check_positive_int(filters, "filters")
        if filters % 2:
            raise ValueError(f"filters must be even (the bottleneck is filters / 2 wide), got {filters}")
        self.filters = filters

    def build(self, input_shape):
        policy, half, channels = self.dtype_policy, self.filters // 2, input_shape[-1]
        widths = [(channels, half, 1), (half, half, 3), (half, self.filters, 1)]
        self.norms, self.convs = [], []
        for i, (width_in, width_out, kernel) in enumerate(widths, start=1):
            bn = batch_norm(dtype=policy, name=f"bn{i}")
            conv = layers.Conv2D(width_out, kernel, padding="same", dtype=policy, name=f"conv{i}",
                                 **torch_defaults((kernel, kernel, width_in, width_out)))
            bn.build((None, None, None, width_in))
            conv.build((None, None, None, width_in))
            self.norms.append(bn)
            self.convs.append(conv)
        self.skip = None
        if channels != self.filters:
            self.skip = layers.Conv2D(self.filters, 1, dtype=policy, name="skip",
                                      **torch_defaults((1, 1, channels, self.filters)))
            self.skip.build(input_shape)

    def call(self, x, training=None):
        y = x
        for bn, conv in zip(self.norms, self.convs):
            y = conv(ops.relu(bn(y, training=training)))
        return y + (x if self.skip is None else self.skip(x))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def upsample_nearest(x):
    """Nearest-neighbour x2 upsampling of (B, H, W, C), on dynamic H and W."""
    return ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)


@keras.saving.register_keras_serializable(package="acnn_pose")
class Hourglass(keras.layers.Layer):
    """Newell's hourglass: recursive pool / residual / upsample / add, ``depth`` poolings.

    At each level the input goes two ways: a residual at this resolution
    (``up``), and a max-pool, a residual (``down``), the next level (or the
    ``bottom`` residual), a residual (``after``) and a nearest x2 upsampling;
    the two are added. Input and output both have ``filters`` channels and
    the same size, which must be divisible by ``2**depth``.

    Args:
        filters: channels throughout (paper: 256).
        depth: poolings (paper: 4, from 64x64 down to 4x4).

    Example:
    >>> import numpy as np
    >>> tuple(Hourglass(8, depth=2)(np.zeros((1, 8, 8, 8), "float32")).shape)
    (1, 8, 8, 8)
    """

    def __init__(self, filters: int, depth: int = 4, **kwargs):
        super().__init__(**kwargs)
        check_positive_int(filters, "filters")
        check_positive_int(depth, "depth")
        self.filters = filters
        self.depth = depth

    def build(self, input_shape):
        if input_shape[-1] != self.filters:
            raise ValueError(f"{self.name}: input has {input_shape[-1]} channels, the hourglass {self.filters}")
        shape = (None, None, None, self.filters)

        def residual(name):
            block = Residual(self.filters, dtype=self.dtype_policy, name=name)
            block.build(shape)
            return block

        self.up = [residual(f"up{level}") for level in range(self.depth)]
        self.down = [residual(f"down{level}") for level in range(self.depth)]
        self.after = [residual(f"after{level}") for level in range(self.depth)]
        self.bottom = residual("bottom")

    def _level(self, x, level: int, training):
        up = self.up[level](x, training=training)
        low = self.down[level](ops.max_pool(x, 2, 2), training=training)
        if level + 1 < self.depth:
            low = self._level(low, level + 1, training)
        else:
            low = self.bottom(low, training=training)
        low = self.after[level](low, training=training)
        return up + upsample_nearest(low)

    def call(self, x, training=None):
        return self._level(x, 0, training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "depth": self.depth}


@keras.saving.register_keras_serializable(package="acnn_pose")
class AttentionMaskGate(keras.layers.Layer):
    """Eq. 1: ``X_{i+1} = F_i * M_i``, the one-channel mask broadcast across the feature channels.

    Inputs ``[F, M]``: the features passed to the next stage (B, H, W, C;
    in ``build_model`` Newell's merge ``X_i + fc'(F_i) + score'(H_i)``) and
    the stage's mask (B, H, W, 1) in [0, 1]. Returns ``(F * M, M)`` where the
    returned mask is the one applied, float32.

    ``force_ones`` (a non-trainable weight, so it switches inside compiled
    training functions and is saved with the model) replaces M by ones:
    stage A of the staged training (section 3.3), where every region passes.
    The replacement is exact: ``1 + 0 * M``.

    Example:
    >>> import numpy as np
    >>> gate = AttentionMaskGate(force_ones=True)
    >>> x, m = gate([np.ones((1, 2, 2, 3), "float32"), np.zeros((1, 2, 2, 1), "float32")])
    >>> float(np.asarray(x).min()), float(np.asarray(m).min())
    (1.0, 1.0)
    """

    def __init__(self, force_ones: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(force_ones, bool):
            raise ValueError(f"AttentionMaskGate: force_ones must be True or False, got {force_ones!r}")
        self._constructed_force = force_ones  # the config: what the constructor was given
        self._initial_force = force_ones  # the switch's value until built (the setter may change it)

    def build(self, input_shape):
        f_shape, m_shape = input_shape
        if m_shape[-1] != 1:
            raise ValueError(f"{self.name}: the mask must have one channel, got shape {m_shape}")
        self.force = self.add_weight(shape=(), initializer=keras.initializers.Constant(float(self._initial_force)),
                                     trainable=False, dtype="float32", name="force_ones")

    @property
    def force_ones(self) -> bool:
        return bool(ops.convert_to_numpy(self.force)) if self.built else self._initial_force

    @force_ones.setter
    def force_ones(self, value: bool):
        self._initial_force = bool(value)
        if self.built:
            self.force.assign(float(bool(value)))

    def call(self, inputs):
        features, mask = inputs
        force = ops.cast(self.force, "float32")
        mask = force + (1.0 - force) * ops.cast(mask, "float32")
        return features * ops.cast(mask, features.dtype), mask  # eq. 1

    def compute_output_spec(self, inputs):
        features, mask = inputs
        return (keras.KerasTensor(features.shape, dtype=features.dtype),
                keras.KerasTensor(mask.shape, dtype="float32"))

    def get_config(self):
        # The switch's state is a weight (saved with the model); the config stays the constructor's.
        return {**super().get_config(), "force_ones": self._constructed_force}


@keras.saving.register_keras_serializable(package="acnn_pose")
class StagePrediction(keras.layers.Layer):
    """Eq. 4: ``P_i = H_i + P_{i-1} * (1 - M_{i-1})``; ``P_1 = H_1`` when called on ``[H_1]``.

    Computes in float32 whatever the dtype policy (the heatmaps are the
    model's final output).

    Example:
    >>> import numpy as np
    >>> h, p = np.ones((1, 2, 2, 3), "float32"), np.full((1, 2, 2, 3), 2.0, "float32")
    >>> m = np.zeros((1, 2, 2, 1), "float32")
    >>> float(np.asarray(StagePrediction()([h, p, m])).max())
    3.0
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        heatmap = ops.cast(inputs[0], "float32")
        if len(inputs) == 1:
            return heatmap
        _, previous, mask = inputs
        return heatmap + ops.cast(previous, "float32") * (1.0 - ops.cast(mask, "float32"))  # eq. 4

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])
