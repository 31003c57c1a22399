"""``zoo ablation`` trains the U-Transformer recipe by default: Adam 1e-4, no flips or rotations."""

from common import cli


def test_ablation_defaults_to_the_papers_recipe_and_passes_repeats(monkeypatch, capsys):
    from common.studies import ablation

    seen = {}

    def run_study(config, out, table, folds, repeats, seeds):
        seen.update(config=config, out=out, table=table, folds=folds, repeats=repeats, seeds=seeds)
        return "table"

    monkeypatch.setattr(ablation, "run_study", run_study)
    assert cli.main(["ablation", "prep", "out", "--table", "table3", "--repeats", "3"]) == 0
    config = seen["config"]
    assert (config.optimizer, config.learning_rate, config.augment) == ("adam", 1e-4, "none")
    assert (seen["table"], seen["folds"], seen["repeats"], seen["seeds"]) == ("table3", 5, 3, None)
    assert cli.main(["ablation", "prep", "out", "--augment", "flip", "--seeds", "0,10"]) == 0
    assert seen["config"].augment == "flip" and seen["seeds"] == [0, 10]
    assert capsys.readouterr().out.splitlines() == ["table", "table"]
