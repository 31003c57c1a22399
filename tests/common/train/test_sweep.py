"""The learning-rate sweep: which loss each command's run ends with, the choice, and `zoo sweep-lr` around them."""

import json

import pytest

from common import errors
from common.train import sweep


def _history(path, losses, column="val_loss"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"epoch,loss,{column}\n" + "".join(f"{e},{v + 1},{v}\n" for e, v in enumerate(losses)))


def test_each_command_is_scored_by_the_model_it_keeps(tmp_path):
    _history(tmp_path / "train" / "history.csv", [0.9, 0.5, 0.6])  # a fixed schedule keeps its last epoch
    assert sweep.final_val_loss("train", tmp_path / "train") == 0.6
    pose = tmp_path / "pose"
    _history(pose / "history_A.csv", [0.1, 0.1, 0.1])
    _history(pose / "history_B.csv", [0.7, 0.4])
    (pose / "config.json").write_text(json.dumps({"stages": [{"name": "A"}, {"name": "B"}]}))
    assert sweep.final_val_loss("train-pose", pose) == 0.4  # its last stage's last epoch
    _history(tmp_path / "sl" / "SL_100" / "run_0" / "logs" / "history.csv", [0.8, 0.3, 0.5])
    _history(tmp_path / "sl" / "source" / "run_0" / "logs" / "history.csv", [0.01])  # never the source's
    assert sweep.final_val_loss("tri-al", tmp_path / "sl") == 0.3  # early stopping keeps the best epoch
    for j, losses in enumerate(([0.2, 0.1], [0.9, 0.6, 0.7])):
        _history(tmp_path / "al" / "ITER" / "run_0" / "logs" / f"iteration_{j}" / "history.csv", losses)
    assert sweep.final_val_loss("tri-al", tmp_path / "al") == 0.6  # the last round's best


def test_a_run_that_cannot_be_scored_names_its_file(tmp_path):
    _history(tmp_path / "history.csv", [0.5, 0.4], column="accuracy")
    with pytest.raises(errors.DataError, match=r"history.csv: no val_loss to choose by \(zoo train: give "
                                               r"--validation-cases N"):
        sweep.final_val_loss("train", tmp_path)
    with pytest.raises(errors.DataError, match="missing; the sweep's run did not finish"):
        sweep.final_val_loss("train", tmp_path / "nothing")
    for column in ("SL_20", "SL_100"):
        _history(tmp_path / "study" / column / "run_0" / "logs" / "history.csv", [0.5])
    with pytest.raises(errors.DataError, match="one column and one run .* found 2"):
        sweep.final_val_loss("tri-al", tmp_path / "study")


def test_the_lowest_finite_loss_is_chosen_and_a_diverged_scale_never():
    assert sweep.choose({1 / 3: 0.5, 1.0: 0.4, 3.0: None}) == 1.0
    assert sweep.choose({1 / 3: 0.3, 1.0: float("nan"), 3.0: 0.4}) == 1 / 3
    with pytest.raises(errors.DataError, match=r"every scale of the sweep diverged \(lr_x1, lr_x3\)"):
        sweep.choose({1.0: None, 3.0: None})


def test_zoo_sweep_lr_runs_the_command_per_scale_and_records_the_choice(tmp_path, zoo_here, monkeypatch):
    """The command's own handler runs once per scale into OUT/lr_x<scale> with --lr-scale set (here a stand-in
    that writes the history a run at that rate would: x3 diverges, x1/3 ends lowest)."""
    from common.cli import train as train_cli
    from common.nn.callbacks import NonFiniteLoss

    seen = []

    def fake_train(args):
        seen.append((args.out, args.lr_scale, args.model, args.validation_cases))
        if args.lr_scale == 3.0:
            raise NonFiniteLoss(f"{args.out}: epoch 2, step 5: loss NaN")
        _history(tmp_path / args.out / "history.csv", [1.0, 0.5 + args.lr_scale / 10])

    monkeypatch.setattr(train_cli, "train", fake_train)
    monkeypatch.chdir(tmp_path)
    done = zoo_here("sweep-lr", "--scales", "0.3333333333333333,1,3", "sweep", "--", "train", "prep", "run",
                    "--model", "eas_unet", "--validation-cases", "2")
    assert done.returncode == 0, done.stderr
    assert seen == [(f"sweep/lr_x{s:.3g}", s, "eas_unet", 2) for s in sweep.SCALES]
    record = json.loads((tmp_path / "sweep" / "sweep.json").read_text(encoding="utf-8"))
    assert record["chosen_scale"] == 1 / 3 and record["command"][:3] == ["train", "prep", "run"]
    assert [(r["run"], r["diverged"]) for r in record["scales"]] == [
        ("sweep/lr_x0.333", False), ("sweep/lr_x1", False), ("sweep/lr_x3", True)]
    assert "x3 diverged: sweep/lr_x3: epoch 2" in done.stdout and "| x0.333 | 0.533333 | chosen |" in done.stdout


@pytest.mark.parametrize("after_out, message", [
    (["--", "cv", "prep", "run"], "command: give, after --, one of zoo train, train-pose, tri-al"),
    (["--", "train", "prep", "run", "--lr-scale", "2"], "command: --lr-scale is what sweep-lr sets"),
    (["--scales", "1,3", "--", "train", "p", "r"], "sweep-lr's own options (--scales) go before OUT; after OUT: -- "
                                                   "and the command to sweep, got --scales 1,3 -- train p r"),
    (["--", "predict", "r", "a", "b"], "command: give, after --, one of zoo train, train-pose, tri-al with its "
                                       "arguments; got predict r a b"),
])
def test_zoo_sweep_lr_refuses_what_it_cannot_sweep(after_out, message, zoo_here, tmp_path):
    done = zoo_here("sweep-lr", tmp_path / "sweep", *after_out)
    assert done.returncode == 2 and done.stderr.startswith(f"zoo sweep-lr: error: {message}"), done.stderr
    assert not (tmp_path / "sweep").exists()


def test_lr_scale_multiplies_the_rate_of_train_and_train_pose():
    from common import cli
    from common.cli.train import train_config

    parser = cli.build_parser()
    config = train_config(parser.parse_args(["train", "prep", "run", "--model", "eas_unet", "--lr-scale", "3"]))
    assert config.learning_rate == pytest.approx(0.03)  # the recipe's SGD 0.01, x3
    assert parser.parse_args(["train-pose", "data", "run", "--lr-scale", "0.5"]).lr_scale == 0.5
    for bad in ("0", "-1", "nan", "x"):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "prep", "run", "--lr-scale", bad])
