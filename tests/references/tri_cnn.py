"""The original TRI-CNN (Wetteland et al.; TRI-AL's ``get_tri_scale_model``, Keras 2) in float64 NumPy.

Written from the original's architecture, not from the zoo's code: three
VGG16 convolutional parts (3x3 stride-1 'same' convolutions + ReLU, 2x2
max-poolings) on raw 0-255 RGB, each global-average pooled, concatenated
40x, 10x, 2.5x, then ``my_dense1`` and ``my_dense2`` (4096, ReLU; dropout is
the identity at inference) and ``my_output``, a softmax over 6 (0: unused
background, 1..5: blood, damaged, muscle, stroma, urothelium). The 10x and
2.5x VGG16s' layers carry the suffixes ``_100x`` and ``_25x``.

Also writes that network's weights as Keras 2 saves them (``write_keras2_weights``)
and draws random ones of its shapes (``random_weights``).
"""

from __future__ import annotations

import json

import h5py
import numpy as np

VGG16 = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))  # configuration D: (convolutions, filters) per block
SUFFIXES = ("", "_100x", "_25x")  # the 40x, 10x and 2.5x VGG16s' layer-name suffixes, in concatenation order
HEAD = ("my_dense1", "my_dense2", "my_output")
CLASSES = 6  # index 0: the background no tile carries


def conv_names(suffix: str = "") -> list[str]:
    """The 13 convolutions of one VGG16, as ``keras.applications.VGG16`` names them, plus ``suffix``."""
    return [f"block{b}_conv{c}{suffix}" for b, (convs, _) in enumerate(VGG16, 1) for c in range(1, convs + 1)]


def conv3x3_same(x, kernel, bias):
    """Keras' Conv2D(3, padding='same') as im2col: x (N, H, W, C), kernel (3, 3, C, F)."""
    n, h, w, c = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = np.concatenate([padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=-1)
    return patches @ kernel.reshape(9 * c, -1) + bias  # rows in (i, j, c) order, as the kernel's


def max_pool_2x2(x):
    n, h, w, c = x.shape
    return x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def vgg16_avg(x, layers: dict, suffix: str):
    """``VGG16(include_top=False, pooling='avg')``: 512 features per image."""
    names = iter(conv_names(suffix))
    for convs, _ in VGG16:
        for _ in range(convs):
            kernel, bias = layers[next(names)]
            x = np.maximum(conv3x3_same(x, np.float64(kernel), np.float64(bias)), 0.0)
        x = max_pool_2x2(x)
    return x.mean(axis=(1, 2))


def forward(layers: dict, x_400x, x_100x, x_25x):
    """The original's 6 probabilities for raw 0-255 RGB tiles (N, S, S, 3), float64.

    Args:
        layers: original layer name -> [kernel, bias] (Keras layout: (kh, kw, in, out), (in, out)).
        x_400x, x_100x, x_25x: the three tiles of each triplet, as the original's inputs.
    """
    x = np.concatenate([vgg16_avg(np.float64(t), layers, s) for t, s in zip((x_400x, x_100x, x_25x), SUFFIXES)],
                       axis=-1)
    for name in HEAD:
        kernel, bias = layers[name]
        x = x @ np.float64(kernel) + np.float64(bias)
        if name != "my_output":
            x = np.maximum(x, 0.0)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def random_weights(seed: int = 0, head_units: int = 4096) -> dict[str, list[np.ndarray]]:
    """Float32 weights of the original's shapes, He-normal so activations stay O(1) on 0-255 input.

    The first convolutions are divided by 150 (the RMS of uniform 0-255 pixels is 147), the logits'
    layer drawn with variance 1 / fan_in (logits O(1), so no probability saturates); biases are non-zero.
    """
    rng = np.random.default_rng(seed)

    def dense(fan_in, shape, scale=np.sqrt(2.0)):
        return [np.float32(rng.normal(0, scale / np.sqrt(fan_in), shape)),
                np.float32(rng.normal(0, 0.1, shape[-1]))]

    layers = {}
    for suffix in SUFFIXES:
        channels = 3
        for name, filters in zip(conv_names(suffix), [f for convs, f in VGG16 for _ in range(convs)]):
            layers[name] = dense(9 * channels, (3, 3, channels, filters))
            if channels == 3:
                layers[name][0] /= np.float32(150.0)
            channels = filters
    layers["my_dense1"] = dense(3 * 512, (3 * 512, head_units))
    layers["my_dense2"] = dense(head_units, (head_units, head_units))
    layers["my_output"] = dense(head_units, (head_units, CLASSES), scale=1.0)
    return layers


def layer_names() -> list[str]:
    """Every layer of the original model, weightless ones included, in a Keras 2 model's order."""
    names = ["input_400x", "input_100x_100x", "input_25x_25x"]  # the renaming loop renames the inputs too
    for b, (convs, _) in enumerate(VGG16, 1):
        for layer in [f"block{b}_conv{c}" for c in range(1, convs + 1)] + [f"block{b}_pool"]:
            names += [layer + s for s in SUFFIXES]
    names += ["global_average_pooling2d", "global_average_pooling2d_1_100x", "global_average_pooling2d_2_25x",
              "concatenate", "my_dense1", "dropout", "my_dense2", "dropout_1", "my_output"]
    return names


def _weight_names(layer: str, count: int) -> list[bytes]:
    """Keras 2's variable names; a renamed branch keeps the names its variables were created under."""
    base = next((layer.removesuffix(s) for s in SUFFIXES[1:] if layer.endswith(s)), layer)
    return [f"{base}/{kind}:0".encode() for kind in ("kernel", "bias", "extra")[:count]]


def write_keras2_weights(path, layers: dict, whole_model: bool = False) -> None:
    """Writes ``layers`` (name -> weights) in Keras 2's HDF5 layout: ``save_weights``, or under
    ``model_weights`` as a whole-model ``model.save`` does (with its config and optimizer state).

    ``layer_names`` lists the original's weightless layers, the layers of ``layers`` among the
    original's in its order, then any other layer of ``layers`` (another network's).
    """
    known = layer_names()
    weightless = [n for n in known if "_conv" not in n and not n.startswith("my_")]
    names = [n for n in known if n in layers or n in weightless]
    names += [n for n in layers if n not in known]
    with h5py.File(path, "w") as f:
        root = f
        if whole_model:
            f.attrs["model_config"] = json.dumps({"class_name": "Functional", "config": {}}).encode()
            f.create_group("optimizer_weights").create_dataset("SGD/iter:0", data=np.int64(7))
            root = f.create_group("model_weights")
        root.attrs["layer_names"] = np.array([n.encode() for n in names])
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.4.0"
        for name in sorted(names):
            group = root.create_group(name)
            values = layers.get(name, [])
            weight_names = _weight_names(name, len(values))
            group.attrs["weight_names"] = np.array(weight_names) if values else np.array([], "float64")
            for weight_name, value in zip(weight_names, values):
                group.create_dataset(weight_name.decode(), data=value)
