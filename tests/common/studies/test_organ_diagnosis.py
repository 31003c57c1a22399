import doctest

import keras
import numpy as np
import pytest

import unet_transformer
from common.nn.losses import CEDiceLoss
from common.studies import attention_maps
from common.studies import organ_diagnosis as diagnosis

KWARGS = dict(input_shape=(None, None, 1), num_classes=4, base_filters=4, heads=2)
ORGAN = 2


def _perturbed(model, seed=0):
    """``model`` with random batch-norm statistics and affine weights: an untrained one's are nearly the identity."""
    rng = np.random.default_rng(seed)
    draws = {"gamma": (0.5, 1.5), "beta": (-0.3, 0.3), "moving_mean": (-0.3, 0.3), "moving_variance": (0.5, 2.0)}
    for variable in model.weights:
        name = variable.path.rsplit("/", 1)[-1]
        if name in draws:
            variable.assign(rng.uniform(*draws[name], variable.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def model():
    return _perturbed(unet_transformer.build_model("u_transformer", **KWARGS))


@pytest.fixture(scope="module")
def slices():
    """Three 32x48 slices: background, a block of organ 1 and a block of the organ (label 2) of varying size."""
    rng = np.random.default_rng(0)
    labels = np.zeros((3, 32, 48), np.int16)
    labels[:, 4:20, 4:20] = 1
    for i in range(3):
        labels[i, 12: 28, 20: 28 + 4 * i] = ORGAN
    labels[:, :, 44:] = diagnosis.PAD  # as if the slices were 44 wide, padded to the stride
    images = rng.random((3, 32, 48, 1), dtype=np.float32) + labels[..., None] / 4
    return diagnosis.Slices(images.astype(np.float32), labels, {"case_a": 2, "case_b": 1})


def test_docstring_examples_run():
    failed, attempted = doctest.testmod(diagnosis)  # common/studies is not among pytest's doctest paths
    assert attempted >= 3 and failed == 0


@pytest.mark.parametrize("token_stride", [None, 2])
def test_gate_is_the_blocks_output_over_its_skip(token_stride):
    model = _perturbed(unet_transformer.build_model("u_transformer", token_stride=token_stride, **KWARGS))
    x = np.random.default_rng(1).random((2, 64, 48, 1), dtype=np.float32)
    blocks = attention_maps.mhca_layers(model)
    inputs = keras.Model(model.input, [t for block in blocks for t in block.input])(x)
    for i, block in enumerate(blocks):
        s, y = inputs[2 * i], inputs[2 * i + 1]
        z, attention = diagnosis.mhca_gate(block, s, y)
        out, expected_attention = block([s, y], return_attention=True)
        z, s, out = np.asarray(z), np.asarray(s), np.asarray(out)
        assert z.shape == s.shape and 0 < z.min() and z.max() < 1
        nonzero = np.abs(s) > 1e-3
        assert nonzero.mean() > 0.2, block.name  # the comparison covers many pixels
        np.testing.assert_allclose(z[nonzero], out[nonzero] / s[nonzero], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(z * s, out, atol=1e-6)
        np.testing.assert_allclose(attention, expected_attention, atol=1e-6)


def test_region_masks_count_a_cell_when_more_than_half_is_the_region():
    labels = np.array([[[2, 2, 2, 0, 1, 1],
                        [2, 0, 2, 0, 1, diagnosis.PAD]]])
    masks = diagnosis.region_masks(labels, 2, 2)
    assert masks["organ"].tolist() == [[[True, False, False]]]  # 3 of 4; 2 of 4 is not more than half
    assert masks["other"].tolist() == [[[False, False, True]]]  # 3 of 4, the padded pixel no region's
    assert masks["background"].tolist() == [[[False, False, False]]]
    assert diagnosis.region_masks(np.zeros((1, 5, 5), int), 2, 2)["background"].tolist() == [
        [[True, True, False], [True, True, False], [False, False, False]]]  # a cell past the edge: 2 of 4


def test_entropy_of_hand_made_rows():
    uniform = np.full((1, 1, 1, 8), 1 / 8)
    one_key = np.eye(8)[None, None, :1]
    half = np.array([0.5, 0.5, 0, 0, 0, 0, 0, 0])[None, None, None]
    np.testing.assert_allclose(diagnosis.normalised_entropy(uniform), [[1.0]])
    np.testing.assert_allclose(diagnosis.normalised_entropy(one_key), [[0.0]])
    np.testing.assert_allclose(diagnosis.normalised_entropy(half), [[1 / 3]])  # log 2 / log 8
    heads = np.concatenate([uniform, one_key], axis=1)  # (1, 2 heads, 1, 8): the mean over heads
    np.testing.assert_allclose(diagnosis.normalised_entropy(heads), [[0.5]])


def _numpy_entropy(attention):
    p = np.asarray(attention, np.float64)
    return -(p * np.log(np.clip(p, 1e-300, None))).sum(-1).mean(axis=1) / np.log(p.shape[-1])


def test_entropy_equals_numpy_on_the_models_attention(model):
    x = np.random.default_rng(2).random((2, 64, 64, 1), dtype=np.float32)
    for attention in attention_maps.attention_of(model, x):
        entropy = diagnosis.normalised_entropy(attention)
        assert entropy.shape == attention.shape[:1] + attention.shape[2:3]
        np.testing.assert_allclose(entropy, _numpy_entropy(attention), rtol=1e-6)
        assert 0 < entropy.min() and entropy.max() <= 1 + 1e-9


def _logits_and_labels(seed=3, shape=(2, 8, 8), classes=4):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 2, (*shape, classes)).astype(np.float32), rng.integers(0, classes, shape)


@pytest.mark.parametrize("loss", [CEDiceLoss(4), CEDiceLoss(4, dice_weight=0.5, include_background=True)])
def test_loss_parts_sum_to_the_training_loss(loss):
    logits, labels = _logits_and_labels()
    parts = diagnosis.loss_parts(labels, logits, loss)
    total = float(parts["ce"]) + float(parts["dice"])
    softmax = keras.activations.softmax(keras.ops.convert_to_tensor(logits))  # as the model's output layer
    assert total == pytest.approx(float(loss(labels, softmax)), rel=1e-6)
    assert total == pytest.approx(float(loss(labels, np.asarray(softmax))), rel=1e-5)  # plain probabilities
    assert float(parts["dice"]) > 0.05 and float(parts["ce"]) > 0.5


def test_ce_gradient_is_softmax_minus_one_hot_over_the_pixels():
    logits, labels = _logits_and_labels()
    gradients = diagnosis.loss_gradients(labels, logits, CEDiceLoss(4))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(gradients["ce"], (p - np.eye(4)[labels]) / labels.size, atol=1e-7)
    np.testing.assert_allclose(gradients["ce_dice"], gradients["ce"] + gradients["dice"])
    assert np.abs(gradients["dice"]).sum() > 0


def test_shares_lie_in_the_unit_interval():
    logits, labels = _logits_and_labels(seed=4)
    for gradient in diagnosis.loss_gradients(labels, logits, CEDiceLoss(4)).values():
        organ_pixels, organ_channel, total = diagnosis.gradient_sums(gradient, labels, ORGAN)
        assert 0 < organ_pixels < total and 0 < organ_channel < total


def _shares(organ_right: bool):
    """Pixel shares of each loss part when only the organ (or all but the organ) is predicted right.

    Right pixels are confident (logit margin 20), wrong ones not (margin 2): a softmax saturated on a wrong class
    has no Dice gradient either. Every class is in the labels: Dice's gradient for a class absent from labels and
    prediction is 1 / smooth times its (tiny) probabilities, spread over every pixel alike.
    """
    labels = np.zeros((1, 8, 8), int)
    labels[0, :4] = 1
    labels[0, 6:] = 3
    labels[0, 2:6, 2:6] = ORGAN
    right = labels == ORGAN if organ_right else labels != ORGAN
    wrong = np.array([3, 0, 1, 0])[labels]  # another class, never the organ's where the organ is right
    logits = np.where(right[..., None], 20 * np.eye(4)[labels], 2 * np.eye(4)[wrong]).astype(np.float32)
    shares = {}
    for part, gradient in diagnosis.loss_gradients(labels, logits, CEDiceLoss(4)).items():
        organ_pixels, _, total = diagnosis.gradient_sums(gradient, labels, ORGAN)
        shares[part] = organ_pixels / total
    return shares


def test_organ_share_is_small_when_only_the_organ_is_right_and_large_when_only_it_is_wrong():
    for part, share in _shares(organ_right=True).items():
        assert share < 0.01, part
    for part, share in _shares(organ_right=False).items():
        assert share > 0.99, part


def test_diagnosis_of_a_u_transformer_and_a_unet(model, slices):
    found = diagnosis.diagnose(model, slices, ORGAN, batch_size=2)
    assert [level["layer"] for level in found["mhca"]] == ["mhca3", "mhca2", "mhca1"]
    for level in found["mhca"]:
        for region, value in level["gate"].items():
            assert 0 < value < 1, (level["layer"], region)
        assert 0 < level["entropy"]["organ"] <= 1 and 0 < level["entropy"]["all"] <= 1
    expected = [_numpy_entropy(a).mean() for a in attention_maps.attention_of(model, slices.images)]
    np.testing.assert_allclose([level["entropy"]["all"] for level in found["mhca"]], expected, rtol=1e-5)
    blocks = attention_maps.mhca_layers(model)
    inputs = keras.Model(model.input, [t for block in blocks for t in block.input])(slices.images)
    for i, (block, level) in enumerate(zip(blocks, found["mhca"])):  # all slices at once, not in batches of 2
        z = np.asarray(diagnosis.mhca_gate(block, inputs[2 * i], inputs[2 * i + 1])[0]).mean(axis=-1)
        masks = diagnosis.region_masks(slices.labels, ORGAN, slices.labels.shape[1] // z.shape[1])
        np.testing.assert_allclose([level["gate"][region] for region in masks],
                                   [z[mask].mean() for mask in masks.values()], rtol=1e-5)
        assert level["organ_pixels"] == masks["organ"].sum() > 0
    assert set(found["gradient_share"]) == {"ce", "dice", "ce_dice"}
    for share in found["gradient_share"].values():
        assert 0 < share["pixels"] < 1 and 0 < share["channel"] < 1
    assert 0 <= found["dice"] <= 1
    unet = unet_transformer.build_model("unet", num_classes=4, base_filters=4)
    plain = diagnosis.diagnose(unet, slices, ORGAN)
    assert plain["mhca"] is None and 0 < plain["gradient_share"]["ce"]["pixels"] < 1


def test_organ_dice_is_the_argmax_overlap(slices):
    image = keras.Input((None, None, 1))
    logits = keras.layers.Conv2D(4, 1, name="logits")(image)
    perfect = keras.Model(image, keras.layers.Activation("softmax", name="probabilities")(logits))
    # Logit 2 (the organ) rises with the image, which adds label / 4: bright pixels are called the organ.
    perfect.get_layer("logits").set_weights([np.array([[[[0, 0, 40, 0]]]], np.float32),
                                             np.array([0, 0, -20, 0], np.float32)])
    predicted = (slices.images[..., 0] * 40 - 20 > 0) & (slices.labels != diagnosis.PAD)
    truth = slices.labels == ORGAN
    expected = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
    assert diagnosis.diagnose(perfect, slices, ORGAN)["dice"] == pytest.approx(expected)


def test_organ_label_errors_name_the_classes():
    names = ["background", "liver", "gallbladder"]
    assert diagnosis.organ_label("gallbladder", names) == 2 and diagnosis.organ_label("1", names) == 1
    for bad in ("gallblader", "0", "3", "-1"):
        with pytest.raises(ValueError, match="--organ: .* none of the classes liver, gallbladder"):
            diagnosis.organ_label(bad, names)


def test_a_model_without_a_softmax_output_is_refused(slices):
    image = keras.Input((None, None, 1))
    linear = keras.Model(image, keras.layers.Conv2D(4, 1, name="logits")(image))
    with pytest.raises(ValueError, match="no softmax"):
        diagnosis.diagnose(linear, slices, ORGAN)


def test_a_model_of_another_input_size_is_refused(slices):
    fixed = unet_transformer.build_model("unet", input_shape=(32, 32, 1), num_classes=4, base_filters=2)
    with pytest.raises(ValueError, match="takes 32x32 slices; these are 32x48"):
        diagnosis.diagnose(fixed, slices, ORGAN)
