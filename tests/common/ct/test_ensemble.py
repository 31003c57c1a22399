import json
import logging

import numpy as np
import pytest
import SimpleITK as sitk

from common import errors
from common.ct import ensemble, inference
from tests import helpers
from tests.conftest import TINY_SPACING


def _fold(shift: float):
    """The threshold model with its class-1 logit raised by ``shift``: folds that disagree."""
    return helpers.conv_model(helpers.THRESHOLD_KERNEL, helpers.THRESHOLD_BIAS + np.array([0.0, shift, 0.0]))


@pytest.fixture(scope="module")
def cv_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble") / "cv"
    return helpers.fake_cv_folder(root, [_fold(-2.0), _fold(0.0), _fold(3.0)], augment="flip",
                                  split={"train": ["case_000", "case_001"], "test": ["case_002"]})


def _volume(seed=0):
    image = sitk.GetImageFromArray(np.random.default_rng(seed).uniform(-200, 300, (3, 32, 48)).astype(np.float32))
    image.SetSpacing((1.5, 1.5, 4.0))
    return image


def test_a_cv_folder_predicts_the_mean_of_its_folds(cv_folder, caplog):
    loaded = ensemble.load(cv_folder)
    assert loaded.names == ["fold_1", "fold_2", "fold_3"] and loaded.folder == cv_folder and loaded.stride == 16
    caplog.set_level(logging.INFO, logger="common")
    mean, _ = inference.predict_probabilities(loaded.models, _volume())
    folds = [inference.predict_probabilities(model, _volume())[0] for model in loaded.models]
    np.testing.assert_allclose(mean, np.mean(folds, axis=0), atol=1e-6)
    assert np.abs(folds[0] - folds[2]).max() > 0.2  # the folds disagree, so the mean is a real test
    assert caplog.messages == ["volume: model 1/3", "volume: model 2/3", "volume: model 3/3"]  # none for one model
    assert ensemble.trained_cases(loaded) == {"case_000", "case_001"}


def test_folds_that_cannot_be_averaged(cv_folder, tmp_path):
    other = helpers.fake_cv_folder(tmp_path / "cv", [_fold(0.0), _fold(0.0)])
    config = json.loads((other / "fold_2" / "config.json").read_text(encoding="utf-8"))
    (other / "fold_2" / "config.json").write_text(json.dumps({**config, "num_classes": 4}))
    with pytest.raises(errors.DataError, match=r"fold_2/config.json: num_classes 4 differs from fold_1's 3"):
        ensemble.load(other)
    (other / "fold_2" / "model.keras").unlink()
    with pytest.raises(errors.DataError, match=r"fold_2/model.keras: missing, the cross-validation is unfinished"):
        ensemble.load(other)


def test_defaults_follow_the_training(cv_folder, tiny_prepared, caplog):
    loaded = ensemble.load(cv_folder)
    options = ensemble.options_for(loaded)
    assert options == inference.InferenceOptions(tile=None, step=0.5, tta="mirror")  # trained with flips
    assert caplog.messages == []
    loaded.configs[0] = {**loaded.config, "augment": "none", "data": str(tiny_prepared), "crop_size": 32}
    options = ensemble.options_for(loaded)
    assert options.tta == "none" and options.tile == (32, 32)  # 32 crops of 64-pixel slices
    assert ensemble.options_for(loaded, tile="whole").tile is None
    loaded.configs[0]["crop_size"] = 64
    assert ensemble.options_for(loaded).tile is None  # trained on whole slices
    assert ensemble.options_for(loaded, tta="mirror").tta == "mirror"
    assert caplog.record_tuples == [("common.ct.ensemble", logging.WARNING,
                                     "warning: fold_1 trained without flips (augment none); mirroring anyway")]
    assert ensemble.options_for(loaded, spacing="auto").spacing == pytest.approx(TINY_SPACING[:2], rel=1e-6)
    loaded.configs[0]["data"] = str(tiny_prepared / "gone")
    assert ensemble.options_for(loaded).tile is None
    unknown = caplog.messages[-1]
    assert unknown.startswith("warning: whole slices, as the training slice size is unknown") and "gone" in unknown


def test_options_that_do_not_fit_the_model(cv_folder, keras_file):
    loaded = ensemble.load(cv_folder)
    with pytest.raises(ValueError, match="needs sides that are multiples of 16"):
        ensemble.options_for(loaded, tile=(40, 40))
    with pytest.raises(errors.DataError, match=r"cv/postprocessing.json: no post-processing decision"):
        ensemble.options_for(loaded, postprocessing=True)
    bare = ensemble.load(keras_file)
    assert bare.configs == [{}] and bare.folder is None
    assert ensemble.options_for(bare) == inference.InferenceOptions()  # today's plain prediction
    with pytest.raises(ValueError, match="postprocess: tiny.keras is not a `zoo cv` folder"):
        ensemble.options_for(bare, postprocessing=True)
    with pytest.raises(ValueError, match="spacing: auto needs the run's config.json"):
        ensemble.options_for(bare, spacing="auto")
