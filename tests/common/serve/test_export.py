import json
import pathlib
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

import unet_transformer
from common import registry
from common.ct import inference
from common.serve import allowlist, card, export, pipeline
from tests import helpers


@pytest.fixture(scope="module")
def model():
    return unet_transformer.build_model("unet", num_classes=3, base_filters=2)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    base = tmp_path_factory.mktemp("serving")
    return base, export.export_saved_model(model, base, "unet", warmup_sizes=((32, 32), (48, 64)))


def test_served_outputs_equal_keras_in_a_tensorflow_only_process(model, exported, tmp_path):
    _, version_dir = exported
    rng = np.random.default_rng(0)
    images = {"a": rng.random((2, 32, 48, 1), dtype=np.float32), "b": rng.random((1, 64, 64, 1), dtype=np.float32)}
    for key, x in images.items():
        np.save(tmp_path / f"{key}.npy", x)
        np.save(tmp_path / f"{key}_expected.npy", np.asarray(model(x)))
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import tensorflow as tf
        serve = tf.saved_model.load({str(version_dir)!r}).signatures["serving_default"]
        for key in "ab":
            x = np.load(f"{tmp_path}/{{key}}.npy")
            out = serve(image=tf.constant(x))
            expected = np.load(f"{tmp_path}/{{key}}_expected.npy")
            np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
            np.testing.assert_array_equal(out["labels"].numpy(), expected.argmax(-1))
            assert out["probabilities"].dtype == tf.float32
        assert not {{"common", "unet_transformer"}} & set(sys.modules), "the project was imported"
        print("served", sorted(out))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, encoding="utf-8", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "served ['labels', 'probabilities']" in done.stdout


def test_warmup_records_parse_and_replay(exported):
    _, version_dir = exported
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    records = list(tf.data.TFRecordDataset(str(version_dir / "assets.extra" / export.WARMUP_FILE)))
    assert len(records) == 2
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == "unet" and request.model_spec.signature_name == "serving_default"
        image = tf.make_ndarray(request.inputs["image"])
        out = serve(image=tf.constant(image))
        assert out["probabilities"].shape[:3] == image.shape[:3]


def test_saved_model_cli_shows_the_signature(exported):
    _, version_dir = exported
    cli = pathlib.Path(sys.executable).with_name("saved_model_cli")
    done = subprocess.run([str(cli), "show", "--all", "--dir", str(version_dir)], capture_output=True, text=True,
                          encoding="utf-8", timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "signature_def['serving_default']" in done.stdout
    assert "inputs['image']" in done.stdout and "outputs['labels']" in done.stdout


def test_versions_increase_and_models_config_lists_each_name(model, tmp_path):
    first = export.export_saved_model(model, tmp_path, "unet", warmup_sizes=((32, 32),))
    second = export.export_saved_model(model, tmp_path, "unet", warmup_sizes=((32, 32),))
    assert (first.name, second.name) == ("1", "2")
    export.update_models_config(tmp_path, "liver", "/models/liver")
    config = (tmp_path / "models.config").read_text(encoding="utf-8")
    assert 'base_path: "/models/liver"' in config
    assert config.count("config {") == 2 and 'name: "unet"' in config and 'name: "liver"' in config
    with pytest.raises(ValueError, match="version: .* already exists"):
        export.export_saved_model(model, tmp_path, "unet", version=2)


def test_failed_export_leaves_no_version_behind(model, exported, tmp_path, monkeypatch):
    shutil.copytree(exported[1], tmp_path / "unet" / "1")  # an earlier version, as export wrote it

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "write_warmup_requests", broken)
    with pytest.raises(OSError, match="disk full"):
        export.export_saved_model(model, tmp_path, "unet", warmup_sizes=((32, 32),))
    monkeypatch.undo()
    monkeypatch.setattr(card, "write_card", broken)  # the card is the last file written before the rename
    with pytest.raises(OSError, match="disk full"):
        export.export_saved_model(model, tmp_path, "unet", warmup_sizes=((32, 32),))
    assert sorted(p.name for p in (tmp_path / "unet").iterdir()) == ["1"]


def test_mixed_precision_model_exports_float32(tmp_path):
    with helpers.dtype_policy("mixed_float16"):
        mixed = unet_transformer.build_model("unet", num_classes=3, base_filters=2)
    twin = export.float32_twin(mixed)
    assert {layer.compute_dtype for layer in twin.layers} == {"float32"}
    version_dir = export.export_saved_model(mixed, tmp_path, "mixed", warmup_sizes=((32, 32),))
    x = np.random.default_rng(1).random((1, 32, 32, 1), dtype=np.float32)
    out = helpers.load_serving(version_dir)(image=x)
    np.testing.assert_allclose(out["probabilities"], np.asarray(twin(x)), atol=1e-5)


@pytest.mark.parametrize("kwargs, argument", [(dict(name="../x"), "name"), (dict(name="u", version=0), "version")])
def test_bad_arguments(model, tmp_path, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        export.export_saved_model(model, tmp_path, **kwargs)


@pytest.fixture(scope="module")
def variants(model_files, exported_files):
    """Every registered model, tiny, exported by ``zoo export`` from its file alone (tests/conftest.py, shared with
    tests/common/test_builder_files.py): name -> (model, version folder)."""
    return {name: (model_files[name][0], version) for name, version in exported_files.items()}


@pytest.mark.parametrize("variant", ["attention_unet", "u_transformer"])
def test_every_variant_serves_what_keras_computes(variant, variants):
    model, version_dir = variants[variant]
    serve = helpers.load_serving(version_dir)
    for shape in [(1, 32, 48, 1), (2, 64, 64, 1)]:
        x = np.random.default_rng(len(shape)).random(shape, dtype=np.float32)
        np.testing.assert_allclose(serve(image=x)["probabilities"], np.asarray(model(x)), atol=1e-5)


def test_a_model_of_several_inputs_serves_them_by_name(tmp_path):
    inputs = [keras.Input((8, 8, 3), name=name) for name in ("tile_low", "tile_high")]
    features = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(x) for x in inputs])
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(features))
    version_dir = export.export_saved_model(model, tmp_path, "pair", outputs=lambda p: {"probabilities": p})
    serve = helpers.load_serving(version_dir)
    rng = np.random.default_rng(0)
    low, high = rng.random((2, 2, 8, 8, 3), dtype=np.float32)
    served = serve(tile_low=low, tile_high=high)["probabilities"]
    np.testing.assert_allclose(served, np.asarray(model([low, high])), atol=1e-6)
    records = list(tf.data.TFRecordDataset(str(version_dir / "assets.extra" / export.WARMUP_FILE)))
    request = prediction_log_pb2.PredictionLog.FromString(records[0].numpy()).predict_log.request
    assert len(records) == 1 and sorted(request.inputs) == ["tile_high", "tile_low"]
    served = serve(**{k: tf.make_ndarray(v) for k, v in request.inputs.items()})
    assert served["probabilities"].shape == (1, 5)
    metadata = json.loads((version_dir / "assets.extra" / "metadata.json").read_text(encoding="utf-8"))
    tensors = metadata["network_data_format"]
    assert tensors["inputs"] == {name: {"dtype": "float32", "shape": [None, 8, 8, 3], "value_range": []}
                                 for name in ("tile_low", "tile_high")}  # no run facts: the range is unknown
    assert tensors["outputs"] == {"probabilities": {"dtype": "float32", "shape": [None, 5],
                                                    "value_range": [0.0, 1.0]}}
    assert metadata["model"] is None and metadata["training_config"] is None and card.schema_problem(metadata) is None
    assert card.verify(version_dir) == [version_dir]


def test_eas_unet_serves_its_fused_prediction_only(variants):
    model, version_dir = variants["eas_unet"]
    serve = helpers.load_serving(version_dir)
    assert sorted(serve.signature.structured_outputs) == ["labels", "probabilities"]
    x = np.random.default_rng(3).random((2, 32, 48, 1), dtype=np.float32)
    out = serve(image=x)
    fused = np.asarray(model(x)[0])
    np.testing.assert_allclose(out["probabilities"], fused, atol=1e-5)
    np.testing.assert_array_equal(out["labels"], fused.argmax(-1))


def _traced_ops(concrete_function) -> set[str]:
    """Op types of a traced function and of every function it calls (a call of a function is not an op)."""
    graph = concrete_function.graph.as_graph_def()
    functions = {f.signature.name for f in graph.library.function}
    return {node.op for node in [*graph.node, *(n for f in graph.library.function for n in f.node_def)]} - functions


def _pipeline_ops() -> dict[str, set[str]]:
    """The pipeline in each of its shapes (whole slices, a fixed-size model, tiles, mirroring, folds,
    post-processing, probabilities), traced as ``export_pipeline`` traces them (its int16 signature adds one Cast)."""
    free = helpers.conv_model(helpers.THRESHOLD_KERNEL, helpers.THRESHOLD_BIAS)
    fixed = unet_transformer.build_model("unet", input_shape=(32, 32, 1), num_classes=3, base_filters=2)
    shapes = {"whole": ([free], inference.InferenceOptions(), False), "fixed": ([fixed], inference.InferenceOptions(),
              False), "tiles": ([free, free], inference.InferenceOptions(tile=(32, 32), tta="mirror",
                                                                         postprocess=(1,)), True)}
    found = {}
    for name, (models, options, probabilities) in shapes.items():
        run = pipeline.VolumePipeline(models, options, stride=16, with_probabilities=probabilities)
        for dtype in (tf.float32,):  # int16 differs by one Cast, which float32 models hold too
            traced = tf.function(run.__call__, input_signature=[tf.TensorSpec([None] * 3, dtype),
                                                                 tf.TensorSpec([3], tf.float64)])
            found[f"pipeline {name} {dtype.name}"] = _traced_ops(traced.get_concrete_function())
    return found


def test_the_allow_list_of_verify_is_exactly_the_ops_of_the_zoos_exports(exported, variants):
    # Written exports hold what a trace does not: the top-level graph, the checkpoint's functions, and the gradient
    # functions TensorFlow saves beside attention's custom gradient (the u_transformer's MHSA and MHCA).
    written = {"unet (warm-up sizes)": exported[1], **{name: version for name, (_, version) in variants.items()}}
    serving, checkpoint = {}, set()
    for name, version_dir in written.items():
        found = allowlist.graph_ops(allowlist.read_saved_model(version_dir).meta_graphs[0])
        serving[name] = set(found["serving"])
        checkpoint |= set(found["checkpoint"])
    serving.update(_pipeline_ops())
    assert set(registry.names()) <= set(serving), "every registered model's export is derived"
    needed = set().union(*serving.values())
    missing = {op: sorted(k for k, ops in serving.items() if op in ops) for op in needed - allowlist.SERVING_OPS}
    assert not missing, f"ops the zoo's exports hold, missing from allowlist.SERVING_OPS: {missing}"
    assert not allowlist.SERVING_OPS - needed, f"allowed, held by no export: {allowlist.SERVING_OPS - needed}"
    assert checkpoint - needed == allowlist.CHECKPOINT_OPS  # what only the saver's functions hold
    assert not allowlist.EARLIER_OPS & needed, "an op today's exports hold belongs in SERVING_OPS"
    assert allowlist.check(exported[1]).endswith("op types, each among the zoo's exports' (nothing else runs)")
