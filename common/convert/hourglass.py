"""princeton-vl's ``pytorch_stacked_hourglass`` checkpoint into the zoo's hourglass (or ACNN, masks open).

The checkpoint is what that code's ``train.py`` saves: ``torch.save({'state_dict':
trainer.state_dict(), 'optimizer': ..., 'epoch': ...})``, its network inside a
``Trainer`` wrapping a ``DataParallel``, hence keys such as
``model.module.pre.0.conv.weight`` (a bare state dict, with or without the
prefix, is read too). The network (``models/posenet.py``, ``models/layers.py``)
is the zoo's ``hourglass`` layer for layer; the names map as

    pre.0.conv / pre.0.bn            stem_conv / stem_bn
    pre.1, pre.3, pre.4              stem_res1, stem_res2, stem_res3
    hgs.i.0.(low2.)^l{up1,low1,low3} hourglass_<i+1>/{up,down,after}<l>;  (low2.)^4 is .../bottom
    features.i.0 / features.i.1      stage_<i+1>_res / stage_<i+1>_fc_{conv,bn}
    outs.i.conv                      heatmap_<i+1>
    merge_features.i / merge_preds.i merge_features_<i+1> / merge_heatmaps_<i+1>
    Residual: bnN, convN.conv, skip_layer.conv -> bnN, convN, skip

with convolution weights from PyTorch's (out, in, kh, kw) to Keras' (kh, kw,
in, out) and BatchNorm's weight, bias, running mean and variance to gamma,
beta, moving mean and variance. Dropped, and only these: ``num_batches_tracked``
and the ``skip_layer`` that PyTorch's ``Residual`` builds but does not use when
its input and output widths are equal.
"""

from __future__ import annotations

import re

import keras
import numpy as np

from common import atomic, registry
from common.errors import DataError

PREFIXES = ("model.module.", "module.", "model.")
_VARIABLES = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
              "moving_mean": "running_mean", "moving_variance": "running_var"}
# The zoo's layer -> Newell's module; {i} is the zoo's stage number minus one.
_LAYERS = (
    (r"stem_conv", "pre.0.conv"), (r"stem_bn", "pre.0.bn"),
    (r"stem_res1", "pre.1"), (r"stem_res2", "pre.3"), (r"stem_res3", "pre.4"),
    (r"hourglass_(\d+)", "hgs.{i}.0"),
    (r"stage_(\d+)_res", "features.{i}.0"),
    (r"stage_(\d+)_fc_conv", "features.{i}.1.conv"), (r"stage_(\d+)_fc_bn", "features.{i}.1.bn"),
    (r"heatmap_(\d+)", "outs.{i}.conv"),
    (r"merge_features_(\d+)", "merge_features.{i}.conv.conv"), (r"merge_heatmaps_(\d+)", "merge_preds.{i}.conv.conv"),
)
# Inside a Residual, and the hourglass' recursion: level l sits under l nested low2's.
_INNER = ((r"bn(\d)", "bn{0}"), (r"conv(\d)", "conv{0}.conv"), (r"skip", "skip_layer.conv"),
          (r"up(\d+)", "{low2}up1"), (r"down(\d+)", "{low2}low1"), (r"after(\d+)", "{low2}low3"),
          (r"bottom", "low2.low2.low2.low2"))


def read_checkpoint(path) -> dict[str, np.ndarray]:
    """The state dict of a ``torch.save``d checkpoint as NumPy arrays, prefixes removed (needs PyTorch)."""
    try:
        import torch
    except ImportError:
        raise DataError(f"{path}: reading a PyTorch checkpoint needs PyTorch: pip install -e .[convert] "
                        "(the CPU build: pip install torch --index-url https://download.pytorch.org/whl/cpu)") from None
    try:  # weights_only: tensors and plain containers, never code (torch.load's default since 2.6)
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a bad file
        raise DataError(f"{path}: not a readable PyTorch checkpoint ({_reason(error)})") from None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise DataError(f"{path}: not a PyTorch state dict (expected {{'state_dict': {{name: tensor}}}})")
    return strip_prefix({name: tensor.numpy() for name, tensor in state.items()})


def _reason(error: Exception) -> str:
    """torch.load's error in one line: what weights_only refused (never its advice to load unsafely)."""
    text = str(error) or type(error).__name__
    if text.startswith("Weights only load failed"):
        lines = [line.strip() for line in text.splitlines()[1:]
                 if line.strip() and not line.startswith(("Please file an issue", "Check the documentation"))]
        return "torch.load(weights_only=True) refused it: " + (lines[-1] if lines else "not tensors only")
    return text.splitlines()[0].split(". ")[0]


def strip_prefix(state: dict) -> dict:
    """Keys without the ``model.module.`` of princeton-vl's Trainer and DataParallel."""
    for prefix in PREFIXES:
        if all(key.startswith(prefix) for key in state):
            return {key.removeprefix(prefix): value for key, value in state.items()}
    return dict(state)


def architecture(state: dict, source="checkpoint") -> dict:
    """``build_model``'s stacks, base_filters (Newell's ``inp_dim``) and joints, read from the keys and shapes of
    ``state``."""
    stacks = sum(1 for key in state if re.fullmatch(r"outs\.\d+\.conv\.weight", key))
    if not stacks or "pre.0.conv.weight" not in state:
        raise DataError(f"{source}: not a stacked hourglass of princeton-vl's code (no key 'outs.0.conv.weight' "
                        "or 'pre.0.conv.weight')")
    joints, base_filters = state["outs.0.conv.weight"].shape[:2]
    stem = state["pre.0.conv.weight"].shape[0]
    if stem != base_filters // 4:
        raise DataError(f"{source}: 'pre.0.conv.weight' has {stem} filters; the zoo's stem has base_filters / 4 = "
                        f"{base_filters // 4} for base_filters {base_filters} (Newell's 64 for 256)")
    return {"num_stacks": stacks, "base_filters": int(base_filters), "num_joints": int(joints)}


def _lookup(table, name: str) -> str | None:
    for pattern, template in table:
        match = re.fullmatch(pattern, name)
        if match:
            number = int(match.group(1)) if match.groups() else 0
            return template.format(*match.groups(), i=number - 1, low2="low2." * number)
    return None


def torch_key(path: str) -> str | None:
    """The state-dict key that holds the zoo's variable ``path`` (None: ACNN's own mask heads and gates)."""
    layer, *inner, variable = path.split("/")
    if layer.startswith(("mask_", "gate_")):
        return None
    parts = [_lookup(_LAYERS, layer), *(_lookup(_INNER, name) for name in inner)]
    if None in parts or variable not in _VARIABLES:
        raise DataError(f"the zoo's variable {path} has no counterpart in Newell's network")
    return ".".join([*parts, _VARIABLES[variable]])


def load_state(model: keras.Model, state: dict, source="checkpoint") -> None:
    """Assigns ``state`` to ``model``'s variables; every key is used or named in the error."""
    used = set()
    for variable in model.weights:
        key = torch_key(variable.path)
        if key is None:
            continue
        if key not in state:
            raise DataError(f"{source}: no key '{key}' (for the zoo's {variable.path})")
        value = np.asarray(state[key])
        if value.ndim == 4:  # OIHW -> HWIO
            value = value.transpose(2, 3, 1, 0)
        if tuple(value.shape) != tuple(variable.shape):
            raise DataError(f"{source}: '{key}' has shape {tuple(state[key].shape)}, the zoo's {variable.path} "
                            f"needs {tuple(variable.shape)} (PyTorch layout)")
        variable.assign(value.astype(variable.dtype))
        used.add(key)
    left = [key for key in state if key not in used and not key.endswith(".num_batches_tracked")
            and not (".skip_layer." in key and key.replace(".skip_layer.conv.", ".conv1.conv.") in used)]
    if left:
        raise DataError(f"{source}: key '{left[0]}' has no place in the zoo's hourglass"
                        + (f" ({len(left) - 1} more)" if len(left) > 1 else ""))


def to_keras(state: dict, attention: bool = False, input_size: int = 256, source="checkpoint") -> keras.Model:
    """The zoo's hourglass (or ACNN, every mask forced open) holding ``state``'s weights."""
    state = strip_prefix(state)
    model = registry.build("acnn" if attention else "hourglass", input_shape=(input_size, input_size, 3),
                           **architecture(state, source))
    load_state(model, state, source)
    for layer in model.layers:
        if hasattr(layer, "force_ones"):  # ACNN's gates: Newell's outputs until stage B trains the masks
            layer.force_ones = True
    return model


def convert(checkpoint, out, attention: bool = False, input_size: int = 256) -> keras.Model:
    """Reads ``checkpoint`` and writes the converted model to ``out`` (a ``.keras`` file), atomically."""
    if not str(out).endswith(".keras"):
        raise ValueError(f"OUT: {out} must end in .keras")
    model = to_keras(read_checkpoint(checkpoint), attention, input_size, source=str(checkpoint))
    with atomic.atomic_path(out) as tmp:
        model.save(tmp)
    return model
