"""The training options of `zoo train`/`cv`: presets, overrides, metric names."""

import pytest


def test_training_options_override_the_preset():
    from common import cli
    from common.cli.train import train_config

    args = cli.build_parser().parse_args(["cv", "prep", "run", "--preset", "eas_unet", "--epoch-scale", "0.2",
                                          "--batch-size", "8", "--model", "unet", "--metrics", "dice,voe,hd"])
    config = train_config(args)
    assert (config.model, config.optimizer, config.epochs, config.batch_size, config.learning_rate) == (
        "unet", "sgd", 10, 8, 0.01)
    assert args.metrics == ("dice", "voe", "hd")
    plain = train_config(cli.build_parser().parse_args(["train", "prep", "run"]))
    assert (plain.model, plain.optimizer, plain.epochs, plain.learning_rate) == ("unet", "adam", 50, 1e-4)


def test_unknown_metric_is_refused(capsys):
    from common import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["cv", "prep", "run", "--metrics", "dice,jaccard"])
    assert exit_info.value.code == 2 and "metrics must be among" in capsys.readouterr().err


def test_steps_per_execution_reaches_the_config():
    from common import cli
    from common.cli.train import train_config

    for command in ("train", "cv"):
        args = cli.build_parser().parse_args([command, "prep", "run", "--steps-per-execution", "10"])
        assert train_config(args).steps_per_execution == 10
    assert train_config(cli.build_parser().parse_args(["train", "prep", "run"])).steps_per_execution is None


def test_train_cases_reaches_the_config_and_the_split(tiny_prepared):
    from common import cli
    from common.cli.train import train_config
    from common.ct import shards, splits

    for command in ("train", "cv"):
        args = cli.build_parser().parse_args([command, str(tiny_prepared), "run", "--train-cases", "2"])
        assert train_config(args).train_cases == 2
    config = train_config(cli.build_parser().parse_args(["train", str(tiny_prepared), "run", "--train-cases", "2"]))
    ids = [c["id"] for c in shards.load_manifest(tiny_prepared)["cases"]]
    split = splits.holdout_split(ids, config.test_fraction, config.seed, config.test_cases, config.train_cases)
    assert len(split["train"]) == 2


def test_overwrite_is_an_option_of_train_only(capsys):
    from common import cli

    parser = cli.build_parser()
    assert parser.parse_args(["train", "prep", "run", "--overwrite"]).overwrite
    assert not parser.parse_args(["train", "prep", "run"]).overwrite
    with pytest.raises(SystemExit):  # a cv folder's units keep its options: a new folder is the way
        parser.parse_args(["cv", "prep", "run", "--overwrite"])
    assert "unrecognized arguments: --overwrite" in capsys.readouterr().err


def test_a_models_own_recipe_is_its_default_and_zoo_models_lists_every_recipe(zoo_here):
    from common import cli, registry
    from common.cli.train import train_config

    own = train_config(cli.build_parser().parse_args(["train", "prep", "run", "--model", "eas_unet"]))
    assert (own.optimizer, own.batch_size, own.crop_size, own.base_filters) == ("sgd", 32, 256, 32)
    done = zoo_here("models")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == list(registry.names())
    assert lines[registry.names().index("eas_unet")].startswith(
        "eas_unet (segmentation): optimizer sgd, learning_rate 0.01, lr_decay 1.0, loss ce_dice, batch_size 32")


def test_miss_below_is_a_dice_fraction(zoo_here, tmp_path):
    from common import cli
    from common.train import crossval
    from tests import helpers

    assert cli.build_parser().parse_args(["compare", "a", "b"]).miss_below is None  # crossval.MISS_BELOW
    assert crossval.MISS_BELOW == 0.5
    a = helpers.fake_cv_run(tmp_path, "a", [0.80, 0.45])  # class 2: 0.70, 0.35
    b = helpers.fake_cv_run(tmp_path, "b", [0.85, 0.90])
    done = zoo_here("compare", a, b, "--miss-below", "0.4")
    assert done.returncode == 0, done.stderr
    assert f"{a}: whole-organ misses (class Dice < 0.40): class 2 1 (fold_2 0.35)" in done.stdout.splitlines()
    for given in ("1.5", "0", "nan"):
        done = zoo_here("compare", a, b, "--miss-below", given)
        assert done.returncode == 2 and done.stderr == (
            f"zoo compare: error: miss_below: a Dice fraction in (0, 1), got {float(given)!r}\n")
    done = zoo_here("compare", a, b, "--miss-below", "half")
    assert done.returncode == 2 and "argument --miss-below: invalid float value: 'half'" in done.stderr
