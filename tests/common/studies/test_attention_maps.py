import cv2
import numpy as np
import pytest

import unet_transformer
from common.studies import attention_maps

KWARGS = dict(input_shape=(None, None, 1), num_classes=3, base_filters=4, heads=2)


@pytest.fixture(scope="module")
def model():
    return unet_transformer.build_model("u_transformer", **KWARGS)


def test_attention_equals_the_model_built_to_return_it(model):
    twin = unet_transformer.build_model("u_transformer", return_attention=True, **KWARGS)
    twin.set_weights(model.get_weights())
    x = np.random.default_rng(0).random((1, 64, 48, 1), dtype=np.float32)
    probed = attention_maps.attention_of(model, x)
    named = dict(zip(twin.output_names, twin(x)))
    expected = [named[f"mhca_attention_{level}"] for level in (3, 2, 1)]  # deepest first
    assert len(probed) == 3
    for got, want in zip(probed, expected):
        np.testing.assert_allclose(got, np.asarray(want), atol=1e-6)


def test_maps_follow_the_query_pixel(model, tmp_path):
    image = np.random.default_rng(1).random((64, 64), dtype=np.float32)
    maps = attention_maps.cross_attention_maps(model, image, (10, 50))
    assert list(maps) == ["mhca3", "mhca2", "mhca1"]
    for attention in maps.values():
        assert attention.shape == (64, 64) and attention.min() >= 0
    other = attention_maps.cross_attention_maps(model, image, (60, 3))
    assert not np.allclose(maps["mhca1"], other["mhca1"])  # another query token, another row
    attention_maps.render(tmp_path / "maps.png", image, maps, (10, 50))
    assert cv2.imread(str(tmp_path / "maps.png")).shape == (128, 3 * 128, 3)


def test_errors_name_the_problem(model):
    with pytest.raises(ValueError, match="pixel"):
        attention_maps.cross_attention_maps(model, np.zeros((32, 32), np.float32), (40, 0))
    unet = unet_transformer.build_model("unet", num_classes=2, base_filters=2)
    with pytest.raises(ValueError, match="no MultiHeadCrossAttention"):
        attention_maps.attention_of(unet, np.zeros((1, 32, 32, 1), np.float32))


def test_attention_map_command(model, tiny_cohort, tmp_path, capsys):
    from common import cli

    model.save(tmp_path / "ut.keras")
    out = tmp_path / "maps.png"
    assert cli.main(["attention-map", str(tmp_path / "ut.keras"), str(tiny_cohort / "images" / "case_001.nii.gz"),
                     str(out), "--slice", "6", "--pixel", "30,20"]) == 0
    assert cv2.imread(str(out)).shape == (128, 3 * 128, 3)
    assert "mhca3, mhca2, mhca1" in capsys.readouterr().out
