import json
import logging

import cv2

from common.studies import demo


def test_demo_runs_end_to_end_on_a_small_cohort(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="common")
    results = demo.run(tmp_path, num_cases=3, epochs=1, base_filters=2, seed=0)
    assert len(results) == 1  # 20 % of 3 cases, at least one, held out
    (case, per_class), = results.items()
    assert sorted(per_class) == list(range(1, 8))
    saved = json.loads((tmp_path / "run" / "evaluation.json").read_text(encoding="utf-8"))
    assert saved[case]["1"]["dice"] == per_class[1]["dice"]
    picture = cv2.imread(str(tmp_path / "overlay.png"))
    assert picture.shape == (3 * 128, 3 * 3 * 128, 3)  # CT | reference | prediction, scaled 3x
    assert any("| liver |" in line for line in caplog.messages)
    assert (tmp_path / "run" / "model.keras").exists()
