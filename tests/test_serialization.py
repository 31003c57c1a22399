"""Every custom layer and loss of the zoo: its config is its constructor's arguments, complete, and round-trips.

One table over the four model packages and ``common.nn``'s losses (MONAI-style): each row builds the
object with every constructor argument away from its default, and the tests check ``get_config`` holds
them, ``from_config`` rebuilds the same object, a saved ``.keras`` file names no private class and
reloads to the same outputs, and bad arguments fail in the constructor, not at build time.
"""

import json
import zipfile

import keras
import numpy as np
import pytest

import acnn_pose
import eas_unet
import tri_al
import unet_transformer
from common.nn import built, losses
from tests import helpers

# (class, constructor arguments away from the defaults, input shapes)
LAYERS = [
    (eas_unet.SeparableConvBNHSwish, dict(filters=6, kernel_size=5, dilation_rate=2), [(1, 16, 16, 3)]),
    (eas_unet.ECA, dict(gamma=3, b=2), [(1, 4, 4, 16)]),
    (eas_unet.EASPyramid, dict(filters=8, dilation_rates=[2, 4]), [(1, 8, 8, 8)]),
    (eas_unet.BilinearUpsampling2D, dict(factor=3), [(1, 2, 2, 2)]),
    (acnn_pose.Residual, dict(filters=8), [(1, 4, 4, 4)]),
    (acnn_pose.Hourglass, dict(filters=8, depth=2), [(1, 8, 8, 8)]),
    (acnn_pose.AttentionMaskGate, dict(force_ones=True), [(1, 4, 4, 8), (1, 4, 4, 1)]),
    (acnn_pose.StagePrediction, {}, [(1, 4, 4, 3), (1, 4, 4, 3), (1, 4, 4, 1)]),
    (tri_al.VGG16Preprocess, dict(mode="raw"), [(1, 4, 4, 3)]),
    (unet_transformer.PositionalEncoding2D, {}, [(1, 4, 4, 8)]),
    (unet_transformer.MultiHeadSelfAttention2D, dict(heads=2, positional_encoding=False), [(1, 4, 4, 8)]),
    (unet_transformer.MultiHeadCrossAttention, dict(heads=2, positional_encoding=False, token_stride=2),
     [(1, 8, 8, 4), (1, 4, 4, 8)]),
    (unet_transformer.AttentionGate, dict(inter_channels=3), [(1, 8, 8, 4), (1, 4, 4, 8)]),
]
IDS = [row[0].__name__ for row in LAYERS]
LOSSES = [
    (losses.CEDiceLoss, dict(num_classes=3, dice_weight=0.5, include_background=True, smooth=0.1, name="ce",
                             reduction="sum")),
    (losses.SoftDiceLoss, dict(num_classes=3, include_background=True, smooth=0.1, name="dice", reduction="sum")),
]


@pytest.mark.parametrize("cls, kwargs, shapes", LAYERS, ids=IDS)
def test_config_holds_every_constructor_argument_and_rebuilds_the_layer(cls, kwargs, shapes):
    config = cls(**kwargs, name="layer").get_config()
    for key, value in kwargs.items():
        assert config[key] == value, key
    assert cls.from_config(config).get_config() == config


def _class_names(node) -> list[str]:
    """Every class a saved config names (``class_name`` and the package part of ``registered_name``)."""
    if isinstance(node, list):
        return [name for item in node for name in _class_names(item)]
    if not isinstance(node, dict):
        return []
    own = [node["class_name"]] if isinstance(node.get("class_name"), str) else []
    registered = node.get("registered_name")
    own += [registered.split(">")[-1]] if isinstance(registered, str) else []
    return own + [name for value in node.values() for name in _class_names(value)]


def _model(cls, kwargs, shapes):
    inputs = [keras.Input(shape[1:]) for shape in shapes]
    outputs = cls(**kwargs, name="layer")(inputs if len(inputs) > 1 else inputs[0])
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("cls, kwargs, shapes", LAYERS, ids=IDS)
def test_a_saved_file_names_no_private_class_and_reloads_to_the_same_outputs(cls, kwargs, shapes, tmp_path):
    model = _model(cls, kwargs, shapes)
    rng = np.random.default_rng(0)
    data = [rng.uniform(0.1, 1.0, shape).astype("float32") for shape in shapes]
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        text = archive.read("config.json").decode("utf-8")
    config = json.loads(text)
    assert config["config"]["layers"][-1]["class_name"] == cls.__name__
    private = [name for name in _class_names(config) if name.startswith("_") and name != "__keras_tensor__"]
    assert not private, private
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(keras.tree.flatten(reloaded(data))[0]),
                               np.asarray(keras.tree.flatten(model(data))[0]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cls, kwargs", LOSSES, ids=[row[0].__name__ for row in LOSSES])
def test_losses_keep_every_argument(cls, kwargs):
    loss = cls(**kwargs)
    config = keras.losses.serialize(loss)["config"]
    assert {key: config[key] for key in kwargs} == kwargs
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    labels = np.array([[[0, 1], [2, 1]]])
    probabilities = np.full((1, 2, 2, 3), 1 / 3, "float32")
    assert float(again(labels, probabilities)) == pytest.approx(float(loss(labels, probabilities)))


def test_the_gates_config_stays_its_constructors_while_the_switch_is_a_saved_weight(tmp_path):
    model = _model(acnn_pose.AttentionMaskGate, dict(force_ones=False), [(1, 4, 4, 8), (1, 4, 4, 1)])
    gate = model.get_layer("layer")
    gate.force_ones = True  # stage A's switch, thrown after the model was built
    assert gate.get_config()["force_ones"] is False
    model.save(tmp_path / "gate.keras")
    assert keras.models.load_model(tmp_path / "gate.keras").get_layer("layer").force_ones is True


BAD_ARGUMENTS = [
    (lambda: unet_transformer.MultiHeadSelfAttention2D(heads=0), "heads"),
    (lambda: unet_transformer.MultiHeadCrossAttention(heads="8"), "heads"),
    (lambda: unet_transformer.MultiHeadSelfAttention2D(positional_encoding="yes"), "positional_encoding"),
    (lambda: acnn_pose.AttentionMaskGate(force_ones=1), "force_ones"),
    (lambda: losses.CEDiceLoss(3, smooth=0), "smooth"),
    (lambda: losses.CEDiceLoss(3, dice_weight=-1), "dice_weight"),
    (lambda: losses.SoftDiceLoss(3, smooth=-1.0), "smooth"),
    (lambda: eas_unet.BilinearUpsampling2D(0), "factor"),
]


@pytest.mark.parametrize("make, argument", BAD_ARGUMENTS)
def test_bad_arguments_fail_in_the_constructor_naming_themselves(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


def test_files_saved_with_the_old_private_upsampling_name_still_load():
    config = keras.saving.serialize_keras_object(eas_unet.BilinearUpsampling2D(2, name="up"))
    config.update(class_name="_BilinearUpsampling2D", registered_name="eas_unet>_BilinearUpsampling2D")
    layer = keras.saving.deserialize_keras_object(config)
    assert isinstance(layer, eas_unet.BilinearUpsampling2D) and layer.factor == 2


# ---- Whole models: a saved model records its builder's name and arguments (common.nn.built) --------------------

# (registry name, arguments given, every argument the file records)
BUILT = [
    ("mhca", dict(num_classes=3, base_filters=4, heads=2, token_stride=(1, 1, 2, 2), return_attention=True),
     dict(input_shape=[None, None, 1], num_classes=3, base_filters=4, heads=2, positional_encoding=True,
          mhca_levels=3, token_stride=[1, 1, 2, 2], return_attention=True, initialization="keras")),
    ("eas_unet", dict(input_shape=(32, 32, 1), base_filters=2, deep_supervision=False),
     dict(input_shape=[32, 32, 1], num_classes=2, base_filters=2, deep_supervision=False)),
    ("acnn", dict(input_shape=(64, 64, 3), num_stacks=1, base_filters=8),
     dict(input_shape=[64, 64, 3], num_stacks=1, num_joints=16, base_filters=8)),
    ("tri_cnn", dict(tile_size=32, base_filters=2, head_units=4, preprocessing="imagenet"),
     dict(num_classes=5, tile_size=32, backbone_weights=None, base_filters=2, head_units=4, dropout=0.4,
          preprocessing="imagenet")),
]


@pytest.mark.parametrize("name, kwargs, recorded", BUILT, ids=[row[0] for row in BUILT])
def test_a_built_model_records_its_builder_and_every_argument_as_json_holds_them(name, kwargs, recorded):
    # Rebuilt from its file, each registered model equals the one saved: tests/common/test_builder_files.py.
    from common import registry

    config = registry.build(name, **kwargs).get_config()
    assert {key: config[key] for key in ("builder", "arguments", "name", "trainable")} == {
        "builder": name, "arguments": recorded, "name": name, "trainable": True}
    assert json.loads(json.dumps(config)) == config  # what the file holds is what the model says
    keras.backend.clear_session()


def test_a_model_built_under_mixed_precision_reloads_mixed_whatever_the_policy_at_load(tmp_path):
    from common import registry

    with helpers.dtype_policy("mixed_float16"):
        registry.build("unet", num_classes=2, base_filters=2).save(tmp_path / "mixed.keras")
    reloaded, _ = registry.load_run(tmp_path / "mixed.keras")
    assert reloaded.get_layer("enc0_conv1").dtype_policy.name == "mixed_float16"
    assert keras.config.dtype_policy().name == "float32"  # the policy of the load is left as it was


@pytest.fixture(scope="module")
def unet_file(tmp_path_factory):
    from common import registry

    path = tmp_path_factory.mktemp("built") / "unet.keras"
    registry.build("unet", num_classes=2, base_filters=2).save(path)
    return path


def _edited_file(unet_file, tmp_path, edit):
    """The saved tiny U-Net with its config.json changed by ``edit(config)``, as a hostile or future file is made."""
    with zipfile.ZipFile(unet_file) as archive:
        members = {member: archive.read(member) for member in archive.namelist()}
    config = json.loads(members["config.json"])
    edit(config["config"])
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "edited.keras", "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return tmp_path / "edited.keras"


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(builder="os.system"),
     "cannot be loaded as a Keras model (builder must be one of ('acnn', 'attention_unet', 'eas_unet', 'hourglass', "
     "'mhca', 'mhsa', 'tri_cnn', 'u_transformer', 'unet'), got 'os.system')"),
    (lambda c: c["arguments"].update(depth=5),
     "cannot be loaded as a Keras model (builder 'unet': build_model() got an unexpected keyword argument 'depth')"),
    (lambda c: c["arguments"].update(base_filters=0),
     "cannot be loaded as a Keras model (base_filters must be a positive integer, got 0)"),
], ids=["a builder the zoo did not register", "an argument its builder does not take", "a bad argument"])
def test_a_file_naming_a_builder_or_arguments_the_zoo_has_not_is_one_line_naming_it(unet_file, tmp_path, edit,
                                                                                     message):
    from common import registry
    from common.errors import DataError

    path = _edited_file(unet_file, tmp_path, edit)
    with pytest.raises(DataError) as raised:
        registry.load_run(path)
    assert str(raised.value) == f"{path}: {message}"


@pytest.mark.parametrize("arguments, message", [
    ({"input_shape": (None, None, 1)}, "arguments of builder 'b': use lists, not tuples, got {'input_shape': "
                                       "(None, None, 1)}"),
    ({"width": float("nan")}, "arguments of builder 'b': NaN or infinity, got {'width': nan}"),
    ({"weights": np.ones(2)}, "arguments of builder 'b': not JSON values (Object of type ndarray is not JSON "
                              "serializable)"),
])
def test_arguments_a_file_cannot_hold_are_refused_when_the_model_is_built(arguments, message):
    inputs = keras.Input((2,))
    with pytest.raises(ValueError) as raised:
        built.BuiltModel("b", arguments, inputs=inputs, outputs=keras.layers.Dense(1)(inputs))
    assert str(raised.value) == message
