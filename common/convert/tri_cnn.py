"""Wetteland et al.'s TRI-CNN weights (Keras 2 HDF5, as TRI-AL's script saves them) -> the zoo's ``tri_cnn``.

The original (``get_tri_scale_model``) names its 40x VGG16's layers as
``keras.applications.VGG16`` does and appends ``_100x`` and ``_25x`` to the
10x and 2.5x branches' (``block1_conv1_100x``); its head is ``my_dense1``,
``my_dense2`` and ``my_output``, a 6-way softmax whose index 0 is an unused
background. It feeds raw 0-255 RGB, so the model is built with
``preprocessing="raw"``.

h5py is read directly: Keras 3 cannot load Keras 2's by-name HDF5 layout
into a model whose layers are named, nested and ordered differently.

``convert("AL_Model_0.h5", "tri_cnn.keras")`` turns a file of the original's
``ModelCheckpoint`` (or ``model.save``) into the zoo's;
``tests/common/convert/test_tri_cnn.py`` checks its outputs against a NumPy
forward of the original.
"""

from __future__ import annotations

import pathlib

import h5py
import keras
import numpy as np

from common import atomic, registry
from common.errors import DataError

# The original's branch suffix -> the zoo's VGG16 sub-model of that magnification.
BRANCHES = {"": "vgg16_40x", "_100x": "vgg16_10x", "_25x": "vgg16_2_5x"}
CONCAT_ORDER = ("40x", "10x", "2_5x")  # the original's concatenate([40x, 10x, 2.5x]) before my_dense1
HEAD = {"my_dense1": "head_dense1", "my_dense2": "head_dense2", "my_output": "probabilities"}
BACKGROUND = 0  # the original's output 0, a class no tile carries (its labels are 1..5)


def _attribute(group, name: str) -> list[str]:
    """A Keras 2 string-list attribute, which Keras 2 splits into ``name0``, ``name1``... when it is long."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks, k = [], 0
        while f"{name}{k}" in group.attrs:
            chunks.append(group.attrs[f"{name}{k}"])
            k += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for chunk in chunks for v in np.atleast_1d(chunk)]


def read_weights(path) -> dict[str, list[np.ndarray]]:
    """Reads a Keras 2 HDF5 weights file (``save_weights`` or a whole ``model.save``) as Keras 2's by-name load does.

    Args:
        path: the ``.h5`` file.

    Returns:
        layer name -> its weights in the order of the layer's ``weight_names``, for every layer that has any.
        The group name is trusted, not the weight names (a renamed layer keeps its old ones).

    Raises:
        DataError: one line starting with ``path``, when the file is not HDF5, truncated or not Keras 2's layout.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            names = _attribute(root, "layer_names")
            if not names:
                raise DataError(f"{path}: not a Keras 2 weights file (no layer_names attribute)")
            weights = {}
            for name in names:
                if name not in root:
                    raise DataError(f"{path}: layer {name} is listed but has no group")
                group = root[name]
                weights[name] = [group[w][()] for w in _attribute(group, "weight_names")]
    except (OSError, KeyError, ValueError, TypeError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"{path}: cannot be read as Keras 2 HDF5 weights ({' '.join(str(error).split())})") from None
    return {name: values for name, values in weights.items() if values}


def _same(weights, model):
    return weights


def _concat_rows(weights, model):
    """my_dense1's kernel rows from the original's [40x, 10x, 2.5x] features to the zoo's input order."""
    kernel, bias = weights
    blocks = dict(zip(CONCAT_ORDER, np.split(kernel, len(CONCAT_ORDER))))
    return [np.concatenate([blocks[t.name.removeprefix("tile_")] for t in model.inputs]), bias]


def _drop_background(weights, model):
    """my_output without the background: softmax over the rest is the original's, renormalised."""
    return [np.delete(w, BACKGROUND, axis=-1) for w in weights]


def _plan(model: keras.Model) -> dict:
    """Original layer name -> (zoo layer, transform, extra outputs the original's layer has)."""
    plan = {}
    for suffix, branch in BRANCHES.items():
        for layer in model.get_layer(branch).layers:
            if layer.weights:
                plan[layer.name + suffix] = (layer, _same, 0)
    transforms = {"my_dense1": (_concat_rows, 0), "my_dense2": (_same, 0), "my_output": (_drop_background, 1)}
    for name, target in HEAD.items():
        plan[name] = (model.get_layer(target), *transforms[name])
    return plan


def _check_layer(name: str, values: list, layer, extra: int) -> None:
    if len(values) != len(layer.weights):
        raise DataError(f"layer {name}: {len(values)} weights in the file, {layer.name} has {len(layer.weights)}")
    for k, (value, variable) in enumerate(zip(values, layer.weights)):
        expected = tuple(variable.shape[:-1]) + (variable.shape[-1] + extra,)
        if tuple(value.shape) != expected:
            raise DataError(f"layer {name}: weight {k} ({variable.name}) has shape {tuple(value.shape)} in the "
                            f"file, {expected} expected")


def _more(names: list) -> str:
    return f"{names[0]} (and {len(names) - 1} more)" if len(names) > 1 else names[0]


def _check_names(weights: dict, plan: dict) -> None:
    missing = [name for name in plan if name not in weights]
    unexpected = sorted(name for name, values in weights.items() if len(values) and name not in plan)
    problems = ([f"no layer {_more(missing)} of the original TRI-CNN"] if missing else []) + \
        ([f"layer {_more(unexpected)} with weights is not TRI-CNN's"] if unexpected else [])
    if problems:
        raise DataError("; ".join(problems) + (" (another network's checkpoint?)" if unexpected else ""))


def to_keras(weights: dict, tile_size: int = 128) -> keras.Model:
    """The zoo's ``tri_cnn`` (raw-pixel input, 5 classes, VGG16's widths: base_filters 64) with the original's weights.

    Args:
        weights: ``read_weights``' dict, original layer name -> its weights.
        tile_size: side of the model's tiles (the original: 128; any multiple of 32 works).

    Raises:
        DataError: one line naming the layer, when a TRI-CNN layer is missing, a layer with weights is not
            TRI-CNN's (a checkpoint of another network), or a weight count or shape differs.
    """
    model = registry.build("tri_cnn", num_classes=5, tile_size=tile_size, preprocessing="raw")
    plan = _plan(model)
    _check_names(weights, plan)
    for name, (layer, transform, extra) in plan.items():
        _check_layer(name, weights[name], layer, extra)
        layer.set_weights([np.asarray(w, "float32") for w in transform(weights[name], model)])
    return model


def convert(weights_path, out, tile_size: int = 128) -> keras.Model:
    """Converts the original's weights file into a ``.keras`` file of the zoo's ``tri_cnn``; returns the model.

    Args:
        weights_path: the original's HDF5 file (``save_weights`` or ``model.save``).
        out: the ``.keras`` file to write, atomically: nothing is written on an error.
        tile_size: side of the model's tiles (the original: 128).

    Raises:
        ValueError: ``out`` is not a ``.keras`` path, or is ``weights_path`` itself.
        DataError: one line naming ``weights_path`` (and the layer) when it cannot be converted.
    """
    weights_path, out = pathlib.Path(weights_path), pathlib.Path(out)
    if out.resolve() == weights_path.resolve():
        raise ValueError(f"out must differ from the weights file, got {str(out)!r} for both")
    if out.suffix != ".keras":
        raise ValueError(f"out must end in .keras, got {str(out)!r}")
    weights = read_weights(weights_path)
    try:
        model = to_keras(weights, tile_size)
    except DataError as error:
        raise DataError(f"{weights_path}: {error}") from None
    with atomic.atomic_path(out) as tmp:
        model.save(tmp)
    return model
