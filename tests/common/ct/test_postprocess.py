import json

import numpy as np
import pytest

from common import errors
from common.ct import postprocess


def _with_islands():
    """Class 1: a 4x4x4 block and a 1-voxel island; class 2: a 3x3x3 block and a 2-voxel island."""
    labels = np.zeros((8, 16, 16), np.uint8)
    labels[1:5, 1:5, 1:5] = 1
    labels[7, 15, 15] = 1
    labels[1:4, 8:11, 8:11] = 2
    labels[7, 0, 0:2] = 2
    return labels


def test_only_the_named_classes_lose_their_islands():
    labels = _with_islands()
    reduced = postprocess.keep_largest_component(labels, [1])
    assert reduced[7, 15, 15] == 0 and (reduced[1:5, 1:5, 1:5] == 1).all()
    assert (reduced[7, 0, 0:2] == 2).all()  # class 2 not asked for
    assert np.count_nonzero(reduced != labels) == 1
    both = postprocess.keep_largest_component(labels, [1, 2])
    assert np.count_nonzero(both != labels) == 3 and both[7, 0, 0] == 0
    diagonal = np.zeros((1, 3, 3), np.uint8)
    diagonal[0, 0, 0] = diagonal[0, 1, 1] = diagonal[0, 2, 2] = 1
    assert postprocess.keep_largest_component(diagonal, [1]).sum() == 1  # face connectivity: 3 components


def test_lcc_dice_scores_each_class_reduced_alone():
    predicted = _with_islands()
    reference = postprocess.keep_largest_component(predicted, [1, 2])
    dice = postprocess.lcc_dice(predicted, reference, [1, 2, 3])
    assert dice == {"1": 1.0, "2": 1.0, "3": 1.0}  # class 3 absent from both: 1.0, as common.ct.metrics
    reference[7, 15, 15] = 1  # the class-1 island was right after all
    dice = postprocess.lcc_dice(predicted, reference, [1])
    assert dice["1"] == pytest.approx(2 * 64 / (64 + 65))


def _unit(case_dice):
    """A finished unit: {case: (dice of class 1, dice of class 1 reduced)}."""
    return {"per_case": {c: {"1": {"dice": d}} for c, (d, _) in case_dice.items()},
            "lcc_dice": {c: {"1": r} for c, (_, r) in case_dice.items()}}


def test_the_rule_is_kept_only_where_it_raised_the_mean_held_out_dice(tmp_path):
    units = [_unit({"a": (0.80, 0.90), "b": (0.70, 0.65)}), _unit({"c": (0.60, 0.60)})]
    decision = postprocess.decide(units, ["background", "liver"])
    assert decision["classes"]["1"] == {"name": "liver", "dice": pytest.approx(0.7),
                                        "dice_lcc": pytest.approx(0.7 + 0.05 / 3), "cases": 3, "apply": True}
    worse = postprocess.decide([_unit({"a": (0.8, 0.9), "b": (0.7, 0.5)})], ["background", "liver"])
    assert worse["classes"]["1"]["apply"] is False
    postprocess.write_decision(tmp_path, decision)
    assert postprocess.read_decision(tmp_path) == [1]
    postprocess.write_decision(tmp_path, worse)
    assert postprocess.read_decision(tmp_path) == []


def test_a_missing_or_broken_decision_names_the_file(tmp_path):
    with pytest.raises(errors.DataError, match=r"postprocessing.json: no post-processing decision.*zoo cv"):
        postprocess.read_decision(tmp_path)
    (tmp_path / "postprocessing.json").write_text(json.dumps({"classes": {"1": {"dice": 0.5}}}))
    with pytest.raises(errors.DataError, match="postprocessing.json: not a post-processing decision"):
        postprocess.read_decision(tmp_path)
