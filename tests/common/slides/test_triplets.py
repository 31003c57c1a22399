"""Triplet shards per slide and splits by slide."""

import numpy as np
import pytest

from common.slides import synthetic as synthetic_slides
from common.slides import triplets

TILE = 32


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    synthetic_slides.write_cohort(root / "slides", slides_per_lab=3, seed=5, size=(512, 512))
    manifest = triplets.prepare_triplets(root / "slides", root / "triplets", tile_size=TILE, max_per_slide=20,
                                    log=lambda _: None)
    return root, manifest


def test_prepared_shards_hold_each_slides_triplets(cohort):
    root, manifest = cohort
    assert len(manifest["slides"]) == 6
    for slide_id, entry in manifest["slides"].items():
        shard = np.load(root / "triplets" / "shards" / f"{slide_id}.npz")
        assert shard["tile_40x"].shape == (sum(entry["counts"]), TILE, TILE, 3) and sum(entry["counts"]) <= 20
        assert np.bincount(shard["label"], minlength=5).tolist() == entry["counts"]
    stamp = (root / "triplets" / "shards" / "labA_000.npz").stat().st_mtime_ns
    triplets.prepare_triplets(root / "slides", root / "triplets", tile_size=TILE, max_per_slide=20, log=lambda _: None)
    assert (root / "triplets" / "shards" / "labA_000.npz").stat().st_mtime_ns == stamp  # rerun skips


def test_no_slide_contributes_to_both_training_and_test(cohort):
    root, manifest = cohort
    split = triplets.split_slides(manifest["slides"], seed=2)
    assert sorted(sum(split.values(), [])) == sorted(manifest["slides"])
    assert not set(split["train"]) & set(split["test"]) and not set(split["val"]) & set(split["test"])
    pools = triplets.load_pools(root / "triplets")
    assert len(pools) == sum(sum(e["counts"]) for e in manifest["slides"].values())
    train_slides = set(pools.slide_ids[np.isin(pools.slide_ids, split["train"])])
    test_slides = set(pools.slide_ids[np.isin(pools.slide_ids, split["test"])])
    assert train_slides and test_slides and not train_slides & test_slides
