"""`zoo export`: a version folder, its model card and the model server config; `zoo export --verify`."""

import json
import shutil

import pytest

from common.ct import shards


def _card(version_dir) -> dict:
    return json.loads((version_dir / "assets.extra" / "metadata.json").read_text(encoding="utf-8"))


def test_export_command_writes_a_version_and_the_server_config(zoo_here, keras_file, tmp_path):
    done = zoo_here("export", keras_file, tmp_path / "serving", "--server-base-path", "/models/tiny")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "serving" / "tiny" / "1" / "saved_model.pb").exists()
    assert 'base_path: "/models/tiny"' in (tmp_path / "serving" / "models.config").read_text(encoding="utf-8")
    metadata = _card(tmp_path / "serving" / "tiny" / "1")  # a bare .keras file: no run to describe
    assert (metadata["name"], metadata["model"], metadata["task"]) == ("tiny", "unet", "segmentation")
    assert metadata["training_config"] is None and metadata["class_names"] is None and "command" not in metadata
    verified = zoo_here("export", "--verify", tmp_path / "serving" / "tiny")
    assert verified.returncode == 0, verified.stderr
    assert [line.split()[0] for line in verified.stdout.splitlines()] == ["ok"] * 5 + ["verified"]
    quiet = zoo_here("export", "--verify", tmp_path / "serving" / "tiny", "-q")  # the verdict is its result
    assert quiet.returncode == 0 and quiet.stdout.splitlines() == [verified.stdout.splitlines()[-1]], quiet.stdout


def test_export_of_a_run_records_its_run_and_verify_fails_on_a_broken_card(zoo_here, keras_file, tmp_path):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    cases = [{"id": "a", "shard": "a.tfrecord", "spacing": [0.75, 0.75, 2.0]},
             {"id": "b", "shard": "b.tfrecord", "spacing": [0.85, 0.85, 2.0]}]
    (prepared / shards.MANIFEST).write_text(json.dumps({"cases": cases}), encoding="utf-8")
    classes = [f"organ_{i}" for i in range(8)]
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(keras_file, run / "model.keras")
    config = {"model": "unet", "data": str(prepared), "class_names": classes, "hu_window": [-160.0, 240.0],
              "command": "zoo train prepared run --model unet"}
    (run / "config.json").write_text(json.dumps(config), encoding="utf-8")
    done = zoo_here("export", run, tmp_path / "serving")
    assert done.returncode == 0, done.stderr
    metadata = _card(tmp_path / "serving" / "run" / "1")
    assert metadata["model"] == "unet" and metadata["class_names"] == classes
    assert metadata["training_config"] == {key: config[key] for key in ("model", "class_names", "hu_window")}
    assert metadata["training_config_left_out"] == {"data": "a path", "command": "the command line (it names paths)"}
    assert metadata["hu_window"] == [-160.0, 240.0] and metadata["training_spacing"] == pytest.approx([0.8, 0.8])
    assert metadata["network_data_format"]["outputs"]["labels"]["value_range"] == [0, 7]
    (tmp_path / "serving" / "run" / "1" / "assets.extra" / "metadata.json").unlink()
    done = zoo_here("export", "--verify", tmp_path / "serving" / "run" / "1")
    assert done.returncode == 2
    assert "MISMATCH" in done.stdout and "1/assets.extra/metadata.json: missing" in done.stderr
    quiet = zoo_here("-q", "export", "--verify", tmp_path / "serving" / "run" / "1")  # a mismatch is a warning
    assert quiet.returncode == 2 and [line.split()[0] for line in quiet.stdout.splitlines()] == ["MISMATCH"]


def test_export_arguments_are_checked(zoo_here, tmp_path):
    done = zoo_here("export", "--verify", tmp_path, "run")
    assert done.returncode == 2 and "--verify checks DIR only; drop MODEL" in done.stderr
    done = zoo_here("export", "run")
    assert done.returncode == 2 and "BASE_DIR: required to export" in done.stderr


def _softmax_file(path):
    from tests import helpers

    helpers.conv_model(helpers.THRESHOLD_KERNEL, helpers.THRESHOLD_BIAS).save(path)
    (path.parent / "config.json").write_text('{"model": "unet"}', encoding="utf-8")  # a plain model: say which
    return path


def test_version_labels_name_versions_and_the_policy_serves_exactly_them(zoo_here, tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    model = _softmax_file(tmp_path / "liver.keras")
    base = tmp_path / "serving"

    def served() -> tuple[dict, list]:
        config = text_format.Parse((base / "models.config").read_text(encoding="utf-8"),
                                   model_server_config_pb2.ModelServerConfig()).model_config_list.config[0]
        return dict(config.version_labels), list(config.model_version_policy.specific.versions)

    for labels in (["--version-label", "stable"], ["--version-label", "canary"], []):
        done = zoo_here("export", model, base, *labels)
        assert done.returncode == 0, done.stderr
    assert served() == ({"stable": 1, "canary": 2}, [1, 2])
    assert "version 3 is not served until labelled" in done.stdout
    done = zoo_here("export", model, base, "--version", "4", "--version-label", "canary", "--version-label", "stable")
    assert done.returncode == 0, done.stderr
    assert served() == ({"stable": 4, "canary": 4}, [4])
    done = zoo_here("export", model, base, "--version-label", "2x")
    assert done.returncode == 2 and "version-label: '2x' is not a label" in done.stderr
    assert sorted(p.name for p in (base / "liver").iterdir()) == ["1", "2", "3", "4"]


def test_pipeline_options_are_checked_before_anything_is_written(zoo_here, tmp_path):
    model = _softmax_file(tmp_path / "liver.keras")
    done = zoo_here("export", model, tmp_path / "serving", "--tile", "64", "--tta", "mirror")
    assert done.returncode == 2 and "--tile, --tta: options of --pipeline exports" in done.stderr
    done = zoo_here("export", model, tmp_path / "serving", "--pipeline", "--spacing", "auto")
    assert done.returncode == 2 and "spacing: 'auto' is not exported as a pipeline" in done.stderr
    done = zoo_here("export", model, tmp_path / "serving", "--pipeline", "--postprocess")
    assert done.returncode == 2 and "postprocess: liver.keras is not a `zoo cv` folder" in done.stderr
    done = zoo_here("export", "--verify", tmp_path, "--pipeline")
    assert done.returncode == 2 and "--verify checks DIR only; drop --pipeline" in done.stderr
    assert not (tmp_path / "serving").exists()


def test_the_card_carries_the_runs_evaluations_with_their_commands_and_no_case_id(tmp_path):
    from common.cli import serve

    folder = tmp_path  # summary.json as `zoo cv` writes it (crossval.summarize_run): one value per fold
    (folder / "summary.json").write_text(json.dumps({
        "units": ["fold_1", "fold_2"], "class_names": ["background", "liver", "spleen"],
        "per_class": {"1": {"dice": {"mean": 0.7, "std": 0.1414, "values": [0.8, 0.6]}},
                      "2": {"dice": {"mean": 0.6, "std": float("nan"), "values": [0.6, float("nan")]}}}}))
    (folder / "pckh_valid_stage_B_noflip_shift1.json").write_text(json.dumps(
        {"Head": 90.0, "Total": 80.0, "Mean@0.1": None, "curve": {"thresholds": [0.5], "Total": [80.0]}}))
    found = serve.evaluations(folder, None)
    assert found == [
        {"command": "zoo cv DATA OUT (the folds' options: training_config)", "file": "summary.json", "units": 2,
         "metrics": {"liver": {"dice": {"mean": 0.7, "std": 0.1414}},
                     "spleen": {"dice": {"mean": 0.6, "std": None}}}},  # NaN (one fold): null, not a number
        {"command": "zoo eval-pose DATA RUN --split valid --stage B --no-flip-test --flip-shift 1",
         "file": "pckh_valid_stage_B_noflip_shift1.json", "metrics": {"Head": 90.0, "Total": 80.0, "Mean@0.1": None}}]
    assert serve.evaluations(None) == []
