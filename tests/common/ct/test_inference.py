import numpy as np
import pytest
import SimpleITK as sitk

import unet_transformer
from common import errors
from common.ct import inference


@pytest.fixture(scope="module")
def model():
    return unet_transformer.build_model("unet", num_classes=3, base_filters=2)


def _ct(size=(40, 36, 5), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    image = sitk.GetImageFromArray(
        np.random.default_rng(0).integers(-200, 300, size[::-1]).astype(np.int16))
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((12.5, -30.25, 7.0))
    image.SetDirection(direction)
    return image


@pytest.mark.parametrize("direction", [
    (1, 0, 0, 0, 1, 0, 0, 0, 1),                   # LPS
    (-1, 0, 0, 0, -1, 0, 0, 0, 1),                 # RAS, as NIfTI files usually store
    (0.9848, -0.1736, 0, 0.1736, 0.9848, 0, 0, 0, 1),  # oblique
])
def test_prediction_keeps_input_geometry(model, direction):
    image = _ct(direction=direction)
    labels = inference.predict_volume(model, image, batch_size=2)
    assert labels.GetSize() == image.GetSize()
    assert labels.GetSpacing() == image.GetSpacing()
    assert labels.GetOrigin() == image.GetOrigin()
    assert labels.GetDirection() == image.GetDirection()


def test_prediction_is_in_the_input_voxel_order(model):
    lps = _ct()
    ras = sitk.Flip(lps, (True, True, False))
    a = sitk.GetArrayFromImage(inference.predict_volume(model, lps))
    b = sitk.GetArrayFromImage(inference.predict_volume(model, ras))
    np.testing.assert_array_equal(a, b[:, ::-1, ::-1])


def test_slices_are_padded_to_the_stride_and_cropped_back(model):
    image = np.random.default_rng(0).random((3, 40, 36), dtype=np.float32)
    labels = inference.predict_slices(model, image, batch_size=2)
    assert labels.shape == (3, 40, 36)
    padded = np.pad(image, ((0, 0), (0, 8), (0, 12)))[..., None]
    expected = np.argmax(np.asarray(model(padded)), -1)[:, :40, :36]
    np.testing.assert_array_equal(labels, expected)


def test_fixed_size_model_refuses_other_slices():
    fixed = unet_transformer.build_model("unet", input_shape=(32, 32, 1), num_classes=2, base_filters=2)
    with pytest.raises(errors.DataError, match=r"ct.nii: slices are 36x40 but the model takes 32x32"):
        inference.predict_volume(fixed, _ct(), source="ct.nii")


def test_format_table_reports_mean_and_std():
    results = {"a": {1: {"dice": 0.8}, 2: {"dice": 0.6}}, "b": {1: {"dice": 1.0}, 2: {"dice": 0.4}}}
    table = inference.format_table(results, ["bg", "liver", "spleen"])
    assert "| liver | 90.00 (± 10.00) |" in table
    assert "| spleen | 50.00 (± 10.00) |" in table
    assert "| **mean** | **70.00** |" in table


def test_format_table_has_a_column_per_metric():
    results = {"a": {1: {"dice": 0.8, "voe": 0.3, "assd": 1.5}}, "b": {1: {"dice": 0.6, "voe": 0.5, "assd": 2.5}}}
    table = inference.format_table(results, ["bg", "liver"], ("dice", "voe", "assd"))
    assert table.splitlines()[0] == "| class (2 cases) | dice | voe | assd |"
    assert "| liver | 70.00 (± 10.00) | 40.00 (± 10.00) | 2.00 (± 0.50) |" in table
