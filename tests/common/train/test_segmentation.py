"""``zoo train``: its configuration, the papers presets, deep supervision."""

import csv
import json

import keras
import numpy as np
import pytest

import unet_transformer
from common.ct import shards, splits
from common.nn import optimizers
from common.train import callbacks, recipe
from common.train import segmentation as training


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", 0), ("crop_size", 40),
                                          ("learning_rate", 0.0), ("loss", "focal"), ("optimizer", "lamb"),
                                          ("momentum", -0.1), ("weight_decay", -1.0), ("model", "unet3d")])
def test_bad_train_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        training.TrainConfig(data="d", out="o", **{field: value}).validate()


def test_a_model_trains_by_its_own_papers_recipe_unless_told_otherwise():
    import eas_unet

    own = training.TrainConfig(data="d", out="o", model="eas_unet")
    assert own.recipe == eas_unet.RECIPE  # SGD, batch 32, crops 256, base 32: what build_model defaults to
    assert training.TrainConfig(data="d", out="o").recipe == unet_transformer.RECIPE  # the default model's
    assert training.preset_config(None, epoch_scale=0.1, data="d", out="o", model="eas_unet").epochs == 5
    changed = training.TrainConfig(data="d", out="o", model="eas_unet", batch_size=4, crop_size=None)
    assert (changed.batch_size, changed.crop_size, changed.optimizer) == (4, 256, "sgd")


def test_eas_unet_preset_is_the_papers_recipe_scaled():
    config = training.preset_config("eas_unet", epoch_scale=0.1, data="d", out="o")
    assert (config.model, config.optimizer, config.learning_rate, config.momentum, config.weight_decay,
            config.batch_size, config.crop_size, config.epochs) == ("eas_unet", "sgd", 0.01, 0.9, 1e-4, 32, 256, 5)
    explicit = training.preset_config("eas_unet", epoch_scale=0.1, data="d", out="o", epochs=7, batch_size=4,
                                      model="unet", seed=None)
    assert (explicit.epochs, explicit.batch_size, explicit.model, explicit.seed) == (7, 4, "unet", 0)
    optimizer = recipe.make_optimizer(config, steps_per_epoch=10)
    # PyTorch's SGD (the paper's framework): weight decay coupled into the gradient, Keras' decoupled one off.
    assert isinstance(optimizer, optimizers.TorchSGD) and optimizer.weight_decay is None
    assert optimizer.momentum == 0.9 and optimizer.coupled_weight_decay == pytest.approx(1e-4)
    assert training.preset_config(None, data="d", out="o").optimizer == "adam"
    with pytest.raises(ValueError, match="preset"):
        training.preset_config("unet_pp", data="d", out="o")
    baseline = training.preset_config("eas_unet", data="d", out="o", model="unet")  # the EAS study's U-Net arm
    assert (baseline.model, baseline.optimizer, baseline.base_filters) == ("unet", "sgd", 32)


def test_deep_supervision_loss_is_fused_plus_weighted_sides(tiny_prepared, tmp_path):
    config = training.preset_config("eas_unet", epoch_scale=0.02, data=str(tiny_prepared), out=str(tmp_path),
                                    base_filters=4, batch_size=4, crop_size=32, side_weight=0.25)
    model = training.train(config)
    assert model.output_names == ["probabilities", "side_1", "side_2", "side_3", "side_4"]
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert len(rows) == 1
    for row in rows:
        sides = sum(float(row[f"side_{i}_loss"]) for i in range(1, 5))
        assert float(row["loss"]) == pytest.approx(float(row["probabilities_loss"]) + 0.25 * sides, rel=1e-4)
    assert "probabilities_mean_iou" in rows[0] and "side_1_mean_iou" not in rows[0]
    digest = shards.cohort_sha256(shards.load_manifest(tiny_prepared))
    assert json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))["data_sha256"] == digest
    assert len(digest) == 64
    reloaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    x = np.random.default_rng(0).random((1, 32, 32, 1), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(reloaded(x)[0]), np.asarray(model(x)[0]), atol=1e-6)


def test_attention_outputs_are_not_trained():
    model = unet_transformer.build_model("mhsa", num_classes=2, base_filters=4, heads=2, return_attention=True)
    with pytest.raises(ValueError, match="for inspection"):
        recipe.output_weights(model, 0.4)


def test_a_run_records_the_voxels_of_its_whole_cohort(tiny_prepared):
    """data_sha256 covers the held-out cases too; a folder prepared before digests gives None, and a run started
    before the zoo recorded it resumes (an option its config.json lacks is not compared)."""
    manifest = shards.load_manifest(tiny_prepared)
    config = training.TrainConfig(data=str(tiny_prepared), out="run")
    split = splits.holdout_split([c["id"] for c in manifest["cases"]], config.test_fraction, config.seed)
    record = training.run_record(config, manifest, split, 64, "float32", 1)
    assert record["data_sha256"] == shards.cohort_sha256(manifest) and split["test"]
    held_out = split["test"][0]
    other = {**manifest, "cases": [{**c, "sha256": "0" * 64} if c["id"] == held_out else c for c in manifest["cases"]]}
    assert training.run_record(config, other, split, 64, "float32", 1)["data_sha256"] != record["data_sha256"]
    older = {**manifest, "cases": [{k: v for k, v in c.items() if k != "sha256"} for c in manifest["cases"]]}
    assert training.run_record(config, older, split, 64, "float32", 1)["data_sha256"] is None
    before = {k: v for k, v in record.items() if k != "data_sha256"}
    assert callbacks.option_changes(before, record) == []
    # Started on a folder prepared before digests, resumed on the same cohort prepared again: nothing to compare.
    assert callbacks.option_changes({**record, "data_sha256": None}, record) == []
    # Resumed on other voxels (re-prepared from a regenerated cohort): refused, naming both.
    assert callbacks.option_changes({**record, "data_sha256": "0" * 64}, record) == [
        f"data_sha256 {'0' * 64} -> {record['data_sha256']}"]
