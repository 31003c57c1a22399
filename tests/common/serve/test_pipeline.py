"""`zoo export --pipeline`: a fresh TensorFlow-only process matches `zoo predict` voxel for voxel; the graph's parts."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow as tf
from scipy import ndimage

from common.ct import inference, postprocess, sliding
from common.serve import card, pipeline
from tests import helpers

CONFIG = {"model": "unet", "num_classes": 3, "hu_window": [-160.0, 240.0], "class_names": ["background", "a", "b"]}


def _model(seed: int):
    """Stride 4 (pooled, upsampled) plus an asymmetric 3x3 threshold conv: labels vary, flips and padding matter."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input((None, None, 1))
    coarse = keras.layers.Conv2D(3, 3, padding="same")(keras.layers.MaxPooling2D(4)(inputs))
    local = keras.layers.Conv2D(3, 3, padding="same")
    logits = keras.layers.Add()([local(inputs), keras.layers.UpSampling2D(4)(coarse)])
    model = keras.Model(inputs, keras.layers.Softmax(dtype="float32")(logits))
    kernel = rng.normal(0.0, 1.5, (3, 3, 1, 3))
    kernel[1, 1] += helpers.THRESHOLD_KERNEL[0, 0]
    local.set_weights([kernel.astype(np.float32), helpers.THRESHOLD_BIAS.astype(np.float32)])
    return model


def _run(folder, model, **config):
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    (folder / "config.json").write_text(json.dumps({**CONFIG, **config}), encoding="utf-8")
    return folder


def _volume(path):
    """A RAS int16 CT (5 slices of 40x52, smooth blobs over the model's classes), written as NIfTI."""
    noise = ndimage.gaussian_filter(np.random.default_rng(3).normal(size=(5, 40, 52)), (0.8, 2.5, 2.5))
    image = sitk.GetImageFromArray(np.round(noise / noise.std() * 220 + 40).astype(np.int16))
    image.SetSpacing((0.9, 0.8, 2.5))
    image.SetOrigin((30.5, -12.25, 4.0))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(image, str(path))
    return path


CASES = {  # name -> (model, zoo predict's options, the same for the export)
    "plain": ("run", ["--tile", "whole", "--tta", "none"]),
    "tile_mirror": ("run", ["--tile", "32", "--step", "0.5", "--tta", "mirror", "--batch-size", "2"]),
    "folds_postprocess": ("cv", ["--tile", "whole", "--tta", "mirror", "--postprocess"]),
}

_FRESH = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    folder, names = sys.argv[1], json.loads(sys.argv[2])
    volume, spacing = np.load(f"{folder}/volume.npy"), np.load(f"{folder}/spacing.npy")
    report = {}
    for name in names:
        signatures = tf.saved_model.load(f"{folder}/serving/{name}/1").signatures
        out = signatures["serving_default"](volume=tf.constant(volume.astype(np.float32)), spacing=tf.constant(spacing))
        labels, probabilities = out["labels"].numpy(), out["probabilities"].numpy()
        expected = np.load(f"{folder}/{name}_labels.npy")
        np.testing.assert_array_equal(labels, expected, err_msg=name)
        np.testing.assert_allclose(probabilities, np.load(f"{folder}/{name}_probabilities.npy"), rtol=0, atol=1e-5,
                                   err_msg=name)
        as_int16 = signatures["serving_int16"](volume=tf.constant(volume), spacing=tf.constant(spacing))["labels"]
        np.testing.assert_array_equal(as_int16.numpy(), expected, err_msg=name + " int16")
        report[name] = {"dtype": labels.dtype.name, "classes": np.bincount(labels.ravel(), minlength=3).tolist()}
    assert not {"common", "unet_transformer", "tests"} & set(sys.modules), "the zoo was imported"
    print("REPORT " + json.dumps(report))
""")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Each case predicted by `zoo predict` (in this process) and exported with --pipeline: (folder, {name: ...})."""
    from common.cli import main

    root = tmp_path_factory.mktemp("pipeline")
    models = {"run": _run(root / "run", _model(0), augment="flip"),
              "cv": helpers.fake_cv_folder(root / "cv", [_model(1), _model(2)], augment="flip")}
    decision = {str(c): {"name": CONFIG["class_names"][c], "dice": 0.5, "dice_lcc": 0.6 - 0.2 * (c == 2), "cases": 2,
                         "apply": c == 1} for c in (1, 2)}
    postprocess.write_decision(root / "cv", {"format": 1, "connectivity": 1, "classes": decision})
    ct = _volume(root / "ct.nii.gz")
    canonical = sitk.DICOMOrient(sitk.ReadImage(str(ct)), "LPS")
    np.save(root / "volume.npy", sitk.GetArrayFromImage(canonical))
    np.save(root / "spacing.npy", np.asarray(canonical.GetSpacing(), np.float64))
    for name, (model, options) in CASES.items():
        out = root / f"{name}.nii.gz"
        assert main(["predict", str(models[model]), str(ct), str(out), *options, "--save-probabilities"]) == 0
        for kind in ("", "_probabilities"):
            image = sitk.DICOMOrient(sitk.ReadImage(str(root / f"{name}{kind}.nii.gz")), "LPS")
            np.save(root / f"{name}{kind or '_labels'}.npy", sitk.GetArrayFromImage(image))
        assert main(["export", str(models[model]), str(root / "serving"), "--name", name, "--pipeline", *options,
                     "--probabilities"]) == 0
    return root


def test_a_tensorflow_only_process_matches_zoo_predict_voxel_for_voxel(served):
    done = subprocess.run([sys.executable, "-c", _FRESH, str(served), json.dumps(list(CASES))], capture_output=True,
                          text=True, encoding="utf-8", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))[7:])
    assert {case["dtype"] for case in report.values()} == {"uint8"}
    for name, case in report.items():  # every class present: the equality is not one of constant volumes
        assert min(case["classes"]) > 0, (name, case)


def test_postprocessing_in_the_graph_removed_what_zoo_predict_removed(served):
    labels = np.load(served / "folds_postprocess_labels.npy")
    plain = np.argmax(np.load(served / "folds_postprocess_probabilities.npy"), axis=-1)
    assert ndimage.label(labels == 1)[1] == 1 < ndimage.label(plain == 1)[1]  # the rule ran, on class 1 only
    np.testing.assert_array_equal(labels == 2, plain == 2)


def test_the_card_describes_the_raw_volume_and_verifies(served, zoo_here):
    version = served / "serving" / "tile_mirror" / "1"
    metadata = json.loads((version / "assets.extra" / card.CARD_FILE).read_text(encoding="utf-8"))
    tensors = metadata["network_data_format"]
    assert tensors["inputs"]["volume"] == {"dtype": "float32", "shape": [None, None, None], "value_range": []}
    assert tensors["inputs"]["spacing"]["dtype"] == "float64" and tensors["outputs"]["labels"]["dtype"] == "uint8"
    assert card.schema_problem(metadata) is None
    described = metadata["pipeline"]
    assert "DICOMOrient(image, 'LPS')" in described["volume"] and described["resampling"] is None
    assert (described["tile"], described["tta"], described["batch_size"]) == ([32, 32], "mirror", 2)
    assert described["same_as"].endswith("--tile 32,32 --step 0.5 --tta mirror --spacing none --batch-size 2 "
                                         "--save-probabilities")
    assert json.loads((served / "serving" / "folds_postprocess" / "1" / "assets.extra" / card.CARD_FILE).read_text(
        encoding="utf-8"))["pipeline"]["postprocessing"]["classes"] == [1]
    done = zoo_here("export", "--verify", served / "serving" / "tile_mirror")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 request(s) ran through serving_default within the card" in done.stdout


@pytest.mark.parametrize("size, tile, step", [(32, 32, 0.5), (40, 32, 0.5), (52, 32, 0.5), (100, 24, 0.3),
                                              (97, 16, 1.0), (64, 20, 0.25)])
def test_tile_starts_in_the_graph_equal_sliding(size, tile, step):
    assert pipeline.tile_starts(tf.constant(size), tile, step).numpy().tolist() == sliding.tile_starts(size, tile, step)


def test_largest_component_in_the_graph_equals_scipys_rule():
    rng = np.random.default_rng(0)
    keep = tf.function(pipeline.largest_component, input_signature=[tf.TensorSpec([None] * 3, tf.uint8),
                                                                      tf.TensorSpec([], tf.uint8)])  # one trace
    for shape in [(4, 6, 7), (1, 9, 9), (3, 1, 5), (5, 8, 3)]:
        labels = rng.integers(0, 3, shape).astype(np.uint8)  # many small components, ties among them
        for label in (1, 2):
            np.testing.assert_array_equal(keep(tf.constant(labels), tf.constant(label, tf.uint8)).numpy(),
                                          postprocess.keep_largest_component(labels, [label]), err_msg=str(shape))
    snake = np.zeros((1, 16, 16), np.uint8)  # one component 120 voxels long, and a single voxel apart
    snake[0, ::2, 1:] = 1
    snake[0, 1::4, -1] = snake[0, 3::4, 1] = 1
    snake[0, 15, 0] = 1
    np.testing.assert_array_equal(keep(tf.constant(snake), tf.constant(1, tf.uint8)).numpy(),
                                  postprocess.keep_largest_component(snake, [1]))


def test_what_the_pipeline_cannot_hold_is_refused():
    model = helpers.conv_model(helpers.THRESHOLD_KERNEL, helpers.THRESHOLD_BIAS)
    with pytest.raises(ValueError, match="spacing: 'auto' is not exported as a pipeline"):
        pipeline.VolumePipeline([model], inference.InferenceOptions(spacing=(0.8, 0.8)))
    two = helpers.conv_model(np.ones((1, 1, 1, 2)), np.zeros(2))
    with pytest.raises(ValueError, match=r"model: the folds give \[2, 3\] classes"):
        pipeline.VolumePipeline([model, two], inference.InferenceOptions())
    with pytest.raises(ValueError, match="batch-size must be >= 1"):
        pipeline.VolumePipeline([model], inference.InferenceOptions(), batch_size=0)


def test_a_volume_with_nan_or_inf_is_refused_by_the_served_graph(served):
    """zoo predict refuses non-finite input (common.ct.volume_checks); the served pipeline must too, not label it 0."""
    serve = helpers.load_serving(next((served / "serving" / next(iter(CASES))).iterdir()))
    volume = np.load(served / "volume.npy").astype(np.float32)
    spacing = np.load(served / "spacing.npy")
    for bad in (np.nan, np.inf):
        broken = volume.copy()
        broken[-1, :4, :4] = bad  # in the last chunk: every chunk is checked
        with pytest.raises(tf.errors.InvalidArgumentError, match="volume: NaN or infinite HU values; refused"):
            serve(volume=broken, spacing=spacing)
