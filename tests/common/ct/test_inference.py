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
    assert "| liver | 90.00 (± 14.14) |" in table  # sample std (ddof 1) of 80 and 100
    assert "| spleen | 50.00 (± 14.14) |" in table
    assert "| **mean** | **70.00** |" in table


def test_format_table_has_a_column_per_metric():
    results = {"a": {1: {"dice": 0.8, "voe": 0.3, "assd": 1.5}}, "b": {1: {"dice": 0.6, "voe": 0.5, "assd": 2.5}}}
    table = inference.format_table(results, ["bg", "liver"], ("dice", "voe", "assd"))
    assert table.splitlines()[0] == "| class (2 cases) | dice | voe | assd |"
    assert "| liver | 70.00 (± 14.14) | 40.00 (± 14.14) | 2.00 (± 0.71) |" in table


@pytest.fixture(scope="module")
def threshold_model():
    from tests import helpers

    return helpers.conv_model(helpers.THRESHOLD_KERNEL, helpers.THRESHOLD_BIAS)


class Recorder:
    """Passes slices to a model and records their shapes."""

    def __init__(self, model):
        self.model, self.input_shape, self.shapes = model, model.input_shape, []

    def predict_on_batch(self, x):
        self.shapes.append(x.shape)
        return self.model.predict_on_batch(x)


def _half_plane(direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1)):
    """Dark (class 0) left of column 30, bright (class 2) from it on; RAS-stored, as NIfTI files usually are."""
    array = np.full((3, 48, 64), -500, np.int16)
    array[:, :, 30:] = 500
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((12.5, -30.25, 7.0))
    image.SetDirection(direction)
    return image


def test_prediction_at_the_training_spacing_comes_back_on_the_input_grid(threshold_model):
    image = _half_plane()
    recorder = Recorder(threshold_model)
    options = inference.InferenceOptions(spacing=(1.4, 1.6))
    labels, probabilities = inference.predict_volume(recorder, image, options=options, with_probabilities=True)
    assert {s[1:3] for s in recorder.shapes} == {(32, 32)}  # 24 x 32 slices at half the resolution, padded to 16
    for result in (labels, probabilities):
        assert result.GetSize() == image.GetSize() and result.GetSpacing() == image.GetSpacing()
        assert result.GetOrigin() == image.GetOrigin() and result.GetDirection() == image.GetDirection()
    plain = sitk.GetArrayFromImage(inference.predict_volume(threshold_model, image))
    resampled = sitk.GetArrayFromImage(labels)
    assert (plain[..., :30] == 0).all() and (plain[..., 30:] == 2).all()
    differs = np.flatnonzero((resampled != plain).any(axis=(0, 1)))
    assert set(differs) <= {28, 29, 30, 31}  # only at the edge, within the coarse grid's pixel
    vectors = sitk.GetArrayFromImage(probabilities)
    assert vectors.shape == (3, 48, 64, 3) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors.sum(-1), 1.0, atol=1e-5)
    same = inference.InferenceOptions(spacing=(0.7, 0.8))  # the volume's own: no resampling at all
    np.testing.assert_array_equal(sitk.GetArrayFromImage(inference.predict_volume(threshold_model, image,
                                                                                  options=same)), plain)


def test_saved_probabilities_are_the_labels_argmax_in_the_input_order(threshold_model):
    image = _ct(direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    options = inference.InferenceOptions(tile=(16, 16), tta="mirror")
    labels, probabilities = inference.predict_volume(threshold_model, image, options=options,
                                                     with_probabilities=True)
    vectors = sitk.GetArrayFromImage(probabilities)
    np.testing.assert_array_equal(vectors.argmax(-1), sitk.GetArrayFromImage(labels))
    hu = sitk.GetArrayFromImage(image)
    assert (sitk.GetArrayFromImage(labels)[hu > 200] == 2).all()  # (200 + 160) / 400 > 0.7: the bright class


def test_postprocessing_removes_an_island_only_of_the_classes_named(threshold_model):
    array = np.full((4, 32, 32), -500, np.int16)
    array[1:3, 4:16, 4:16] = 500
    array[3, 28:30, 28:30] = 500  # an island of class 2
    image = sitk.GetImageFromArray(array)
    kept = sitk.GetArrayFromImage(inference.predict_volume(
        threshold_model, image, options=inference.InferenceOptions(postprocess=(1,))))
    assert (kept[3, 28:30, 28:30] == 2).all()
    removed = sitk.GetArrayFromImage(inference.predict_volume(
        threshold_model, image, options=inference.InferenceOptions(postprocess=(1, 2))))
    assert (removed[3, 28:30, 28:30] == 0).all() and (removed[1:3, 4:16, 4:16] == 2).all()
    assert np.count_nonzero(removed != kept) == 4
