"""`zoo convert hourglass`: princeton-vl's checkpoint gives the original network's outputs in the zoo's hourglass.

The reference (``tests/references/newell_hourglass.py``) is a float64 NumPy forward written from
princeton-vl's ``models/posenet.py`` and ``models/layers.py``, sharing no code with the zoo; its random
checkpoints have randomised BatchNorm statistics (variance in [0.5, 2]), run in inference mode.
"""

import sys
import types

import keras
import numpy as np
import pytest

from common.convert import hourglass
from common.errors import DataError
from tests.references import newell_hourglass as newell

TOLERANCE = 1e-5  # of the output's scale (max |reference|)


def _images(size, count=1, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (count, size, size, 3)).astype(np.float32)


def _relative_error(got, want) -> float:
    return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


def test_the_stem_alone_pads_as_torch_does():
    """Newell's 7x7 stride-2 conv pads 3 on every side; Keras' "same" would pad (2, 3) and shift every map."""
    state = newell.random_state_dict(1, seed=3)
    model = hourglass.to_keras(state, input_size=128)
    stem = keras.Model(model.input, model.get_layer("stem_relu").output)
    images = _images(128)
    assert _relative_error(stem(images, training=False), newell.stem(state, images)) < TOLERANCE


@pytest.mark.parametrize("stacks, size", [(2, 128), (8, 64)])
def test_every_stack_equals_newells_network(stacks, size):
    state = newell.random_state_dict(stacks, inp_dim=256, seed=stacks)
    model = hourglass.to_keras(state, input_size=size)
    assert (model.name, len(model.outputs)) == ("hourglass", stacks)
    images = _images(size)
    got = model(images, training=False)
    errors = [_relative_error(g, w) for g, w in zip(got, newell.forward(state, images))]
    assert max(errors) < TOLERANCE, errors


def test_acnn_with_its_masks_forced_open_gives_newells_outputs():
    state = newell.random_state_dict(2, seed=5)
    model = hourglass.to_keras(state, attention=True, input_size=64)
    assert model.output_names == ["prediction_1", "prediction_2", "mask_1"]
    images = _images(64)
    *predictions, mask = model(images, training=False)
    errors = [_relative_error(g, w) for g, w in zip(predictions, newell.forward(state, images))]
    assert max(errors) < TOLERANCE, errors
    assert np.all(np.asarray(mask) == 1.0)


@pytest.mark.parametrize("path, key", [
    ("stem_conv/kernel", "pre.0.conv.weight"),
    ("stem_bn/moving_variance", "pre.0.bn.running_var"),
    ("stem_res3/skip/bias", "pre.4.skip_layer.conv.bias"),
    ("hourglass_2/up0/conv2/kernel", "hgs.1.0.up1.conv2.conv.weight"),
    ("hourglass_1/down3/bn1/gamma", "hgs.0.0.low2.low2.low2.low1.bn1.weight"),
    ("hourglass_1/after1/conv3/bias", "hgs.0.0.low2.low3.conv3.conv.bias"),
    ("hourglass_1/bottom/bn2/beta", "hgs.0.0.low2.low2.low2.low2.bn2.bias"),
    ("stage_3_res/bn1/moving_mean", "features.2.0.bn1.running_mean"),
    ("stage_1_fc_bn/gamma", "features.0.1.bn.weight"),
    ("heatmap_4/kernel", "outs.3.conv.weight"),
    ("merge_heatmaps_1/bias", "merge_preds.0.conv.conv.bias"),
    ("mask_1_logits/kernel", None),
    ("gate_2/force_ones", None),
])
def test_each_zoo_variable_names_its_checkpoint_key(path, key):
    assert hourglass.torch_key(path) == key


def _without(state, key):
    return {k: v for k, v in state.items() if k != key}


def _with(state, key, value):
    return {**state, key: value}


ONE = newell.random_state_dict(1, seed=7)
ILL_STATES = [
    (_without(ONE, "model.module.hgs.0.0.low2.up1.conv2.conv.weight"), "no key 'hgs.0.0.low2.up1.conv2.conv.weight'"),
    (_with(ONE, "model.module.hgs.0.0.extra.weight", np.zeros(3, np.float32)),
     "key 'hgs.0.0.extra.weight' has no place"),
    (_with(ONE, "model.module.features.0.1.conv.weight", np.zeros((256, 256, 3, 3), np.float32)),
     "'features.0.1.conv.weight' has shape (256, 256, 3, 3)"),
    ({"conv1.weight": np.zeros((64, 3, 7, 7), np.float32), "fc.weight": np.zeros((10, 64), np.float32)},
     "not a stacked hourglass"),
    (newell.random_state_dict(1, inp_dim=128, seed=0), "'pre.0.conv.weight' has 64 filters"),
]


@pytest.mark.parametrize("state, message", ILL_STATES, ids=["missing", "extra", "shape", "other_net", "stem"])
def test_a_checkpoint_that_does_not_fit_names_the_file_and_the_key(state, message):
    with pytest.raises(DataError) as error:
        hourglass.to_keras(state, input_size=64, source="ckpt.pt")
    assert str(error.value).startswith("ckpt.pt: ") and message in str(error.value)
    assert "\n" not in str(error.value)


class _Tensor:
    """Stands for a torch.Tensor: what the reader asks of one."""

    def __init__(self, value):
        self.value = value

    def numpy(self):
        return self.value


def _fake_torch(load):
    return types.SimpleNamespace(load=load, is_tensor=lambda value: isinstance(value, _Tensor))


def test_cli_converts_a_checkpoint_and_the_file_alone_predicts(zoo_here, monkeypatch, tmp_path):
    state = newell.random_state_dict(1, seed=11)
    checkpoint = {"state_dict": {k: _Tensor(v) for k, v in state.items()}, "optimizer": {}, "epoch": 3}
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(lambda path, map_location, weights_only: checkpoint))
    (tmp_path / "checkpoint.pt").write_bytes(b"stands for torch.save's zip")
    done = zoo_here("convert", "hourglass", tmp_path / "checkpoint.pt", tmp_path / "newell.keras", "--input-size", "64")
    assert done.returncode == 0, done.stderr
    model = keras.models.load_model(tmp_path / "newell.keras")
    images = _images(64)
    assert _relative_error(model(images, training=False), newell.forward(state, images)[0]) < TOLERANCE


@pytest.mark.parametrize("error, reason", [
    (RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory"),
     "not a readable PyTorch checkpoint (PytorchStreamReader failed"),
    (EOFError("Ran out of input"), "not a readable PyTorch checkpoint (Ran out of input)"),
    (RuntimeError("Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will likely "
                  "succeed\n\n\nTrying to load unsupported GLOBAL posix.system whose module posix is blocked.\n\n"
                  "Check the documentation of torch.load to learn more"),
     "not a readable PyTorch checkpoint (torch.load(weights_only=True) refused it: Trying to load unsupported GLOBAL "
     "posix.system"),
])
def test_cli_a_truncated_or_foreign_file_is_one_line_and_writes_nothing(zoo_here, monkeypatch, tmp_path, error,
                                                                         reason):
    def load(path, map_location, weights_only):
        raise error

    monkeypatch.setitem(sys.modules, "torch", _fake_torch(load))
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    done = zoo_here("convert", "hourglass", tmp_path / "bad.pt", tmp_path / "out.keras")
    assert done.returncode == 2
    assert done.stderr.startswith(f"zoo convert: error: {tmp_path / 'bad.pt'}: {reason}")
    assert len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.pt"]


def test_cli_without_pytorch_says_how_to_install_it(zoo_here, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    (tmp_path / "checkpoint.pt").write_bytes(b"\x80\x02")
    done = zoo_here("convert", "hourglass", tmp_path / "checkpoint.pt", tmp_path / "out.keras")
    assert done.returncode == 2
    assert "checkpoint.pt: reading a PyTorch checkpoint needs PyTorch: pip install -e .[convert]" in done.stderr
    assert not (tmp_path / "out.keras").exists()


@pytest.mark.parametrize("out, message", [("out.h5", "must end in .keras"), ("exists.keras", "exists")])
def test_cli_refuses_an_output_it_would_clobber_or_misname(zoo_here, tmp_path, out, message):
    (tmp_path / "checkpoint.pt").write_bytes(b"x")
    (tmp_path / "exists.keras").write_bytes(b"the user's")
    done = zoo_here("convert", "hourglass", tmp_path / "checkpoint.pt", tmp_path / out)
    assert done.returncode == 2 and message in done.stderr
    assert (tmp_path / "exists.keras").read_bytes() == b"the user's"
