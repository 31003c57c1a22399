"""The U-Transformer ablation table: paired tests against the U-Net."""

import pytest

from common.train import crossval
from common.train import segmentation as training
from tests import helpers


def test_ablation_table_has_paired_tests_against_the_unet(tmp_path):
    from common.studies import ablation

    settings = {"U-Net": None, "MHSA": None}
    helpers.fake_cv_run(tmp_path, "u_net", [0.80, 0.82, 0.79, 0.85, 0.81])
    helpers.fake_cv_run(tmp_path, "mhsa", [0.83, 0.84, 0.80, 0.88, 0.82])
    table = ablation.format_study(tmp_path, settings)
    assert "| U-Net | 76.40 (± 2.30) | — |" in table  # sample std over the 5 folds
    p = crossval.compare(tmp_path / "u_net", tmp_path / "mhsa")["p_value"]
    assert f"| MHSA | 78.40 (± 2.97) | {p:.3g} |" in table
    with pytest.raises(ValueError, match="table"):
        ablation.run_study(training.TrainConfig(data="d", out="o"), tmp_path, table="table2")
