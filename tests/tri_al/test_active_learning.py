import dataclasses
import json
import types

import keras
import numpy as np
import pytest

import tri_al
from common.slides import store
from tri_al import active_learning as al

TILE = 32
CLASSES = 5
HEAD = 16  # hidden units of the tiny models' head (the original's 4096 is for the real thing)


@pytest.mark.parametrize("fnr, budget", [
    ([0.1, 0.3, 0.0, 0.6, 0.0], 100),
    ([0.05, 0.2, 0.13, 0.41, 0.07], 20000),
    ([0.33, 0.33, 0.33, 0.01, 0.0], 7),
    ([1.0, 0.5], 3),
])
def test_allocation_sums_to_the_budget_and_follows_the_fnr_shares(fnr, budget):
    counts = tri_al.allocate_by_fnr(fnr, budget)
    assert sum(counts) == budget and all(isinstance(c, int) for c in counts)
    exact = np.asarray(fnr) * budget / np.sum(fnr)  # N_i = FNR_i * S / sum(FNR)
    assert np.all(np.abs(np.asarray(counts) - exact) < 1)
    assert all(c == 0 for c, f in zip(counts, fnr) if f == 0)


def test_allocation_examples():
    assert tri_al.allocate_by_fnr([0.1, 0.3, 0.0, 0.6, 0.0], 100) == [10, 30, 0, 60, 0]
    assert tri_al.allocate_by_fnr([0.2, 0.2, 0.2, 0.2, 0.2], 20000) == [4000] * 5


@pytest.mark.parametrize("budget, expected", [(20000, [4000] * 5), (7, [2, 2, 1, 1, 1]), (0, [0] * 5)])
def test_all_zero_fnr_splits_equally(budget, expected):
    assert tri_al.allocate_by_fnr([0.0] * 5, budget) == expected


@pytest.mark.parametrize("fnr, budget, argument", [
    ([], 10, "fnr"), ([0.1, -0.2], 10, "fnr"), ([0.1, 1.5], 10, "fnr"), ([0.1, float("nan")], 10, "fnr"),
    ([0.1, 0.2], -1, "budget"), ([0.1, 0.2], 2.5, "budget"),
])
def test_allocation_rejects_bad_input(fnr, budget, argument):
    with pytest.raises(ValueError, match=argument):
        tri_al.allocate_by_fnr(fnr, budget)


def test_a_short_pool_gives_what_it_has():
    pools = {0: np.arange(5), 1: np.arange(100, 200), 2: np.arange(300, 340)}
    drawn, short = al.draw_by_class(pools, [10, 10, 10], np.random.default_rng(0))
    assert short and len(drawn) == 25
    assert set(np.arange(5)) <= set(drawn.tolist())
    drawn, short = al.draw_by_class(pools, [5, 10, 10], np.random.default_rng(0))
    assert not short and len(drawn) == 25 and len(set(drawn.tolist())) == 25


def test_entropy_keeps_exactly_the_highest_entropy_candidates():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(200, CLASSES)) * rng.uniform(0.1, 5, size=(200, 1))
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ids = rng.permutation(1000)[:200]
    chosen = al.select_highest_entropy(ids, probabilities, 30)
    h = al.entropy(probabilities)
    assert len(chosen) == 30
    assert set(chosen.tolist()) == set(ids[np.argsort(-h)[:30]].tolist())
    assert h[np.isin(ids, chosen)].min() >= h[~np.isin(ids, chosen)].max()
    uniform = np.full((4, CLASSES), 1 / CLASSES)
    np.testing.assert_allclose(al.entropy(uniform), np.log(CLASSES))
    assert al.select_highest_entropy(np.array([9, 3, 7, 1]), uniform, 2).tolist() == [1, 3]  # ties: lower id


def test_class_metrics_f1_fnr_micro_macro():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    y_pred = np.array([0, 0, 1, 1, 1, 2, 2, 0, 3, 3])
    m = al.class_metrics(y_true, y_pred, 5)
    np.testing.assert_allclose(m["f1"], [2 * 2 / (4 + 1 + 1), 2 * 2 / (4 + 1), 2 * 2 / (4 + 2), 2 / 3, 0.0])
    np.testing.assert_allclose(m["fnr"], [1 / 3, 0, 0.5, 0, 0])
    assert m["micro_f1"] == pytest.approx(0.7)  # single-label: micro F1 is accuracy
    assert m["macro_f1"] == pytest.approx(np.mean(m["f1"]))


@pytest.fixture(scope="module")
def tiny_data():
    """150 triplets whose class shows as a colour cast, so a tiny TRI-CNN learns something."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(CLASSES), 30)
    cast = np.array([[200, 40, 40], [90, 60, 30], [220, 120, 160], [240, 200, 200], [80, 0, 160]])[labels]
    tiles = [(cast[:, None, None, :] * rng.uniform(0.6, 1.0, (len(labels), TILE, TILE, 1))).astype(np.uint8)
             for _ in range(3)]
    ids = rng.permutation(len(labels))
    split = {"train": np.sort(ids[:100]), "val": np.sort(ids[100:125]), "test": np.sort(ids[125:])}
    return types.SimpleNamespace(tiles=tiles, labels=labels), split


@pytest.fixture(scope="module")
def model():
    """One tiny TRI-CNN for every run here: each run starts from ``source_weights``, whatever ran before."""
    return tri_al.build_model(tile_size=TILE, width=1 / 16, head_units=HEAD)


@pytest.fixture(scope="module")
def source_weights(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("source") / "source.weights.h5"
    model.save_weights(path)
    return path


TRAIN = al.TrainConfig(learning_rate=1e-3, momentum=0.9, batch_size=16, epochs=1)


def _config(strategy, **kwargs):
    return al.ALConfig(strategy, **{"iterations": 4, "budget": 10, "candidates": 15, "initial_per_class": 3,
                                    "seed": 5, "train": TRAIN, **kwargs})


class Interrupt(Exception):
    pass


def test_interrupted_loop_resumes_with_identical_selections(tiny_data, model, source_weights, tmp_path):
    data, split = tiny_data
    whole = al.run_active_learning(model, data, split, tmp_path / "whole", _config("ITER"), source_weights)

    def stop_after_2(j, state):
        if j == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        al.run_active_learning(model, data, split, tmp_path / "cut", _config("ITER"), source_weights, stop_after_2)
    assert sorted(p.name for p in (tmp_path / "cut").glob("*.json")) == [f"iteration_{j}.json" for j in range(3)]
    stamps = [(tmp_path / "cut" / f"iteration_{j}.json").stat().st_mtime_ns for j in range(3)]
    fresh = tri_al.build_model(tile_size=TILE, width=1 / 16, head_units=HEAD)  # as a new process would
    resumed = al.run_active_learning(fresh, data, split, tmp_path / "cut", _config("ITER"), source_weights)
    assert [(tmp_path / "cut" / f"iteration_{j}.json").stat().st_mtime_ns for j in range(3)] == stamps
    assert len(whole) == len(resumed) == 4 and whole[-1]["done"] and not whole[-1]["selected"]
    for a, b in zip(whole, resumed):
        assert a["selected"] == b["selected"] and a["train_ids"] == b["train_ids"]
        np.testing.assert_allclose(a["val"]["fnr"], b["val"]["fnr"])
    assert len(whole[1]["train_ids"]) == len(whole[0]["train_ids"]) + 10  # S = 10 drawn per iteration
    assert sum(whole[0]["delta"]) == pytest.approx(1.0)
    for state in whole[:-1]:
        assert np.bincount(data.labels[state["selected"]], minlength=CLASSES).tolist() == state["requested"]
        assert state["requested"] == tri_al.allocate_by_fnr(state["val"]["fnr"], 10)


def test_ood_stops_once_a_class_pool_runs_short(tiny_data, model, source_weights, tmp_path):
    data, split = tiny_data
    states = al.run_active_learning(model, data, split, tmp_path, _config("OOD", budget=40), source_weights)
    assert [s["exhausted"] for s in states][-2:] == [True, False] and states[-1]["done"]
    assert not any(s["exhausted"] for s in states[:-2])
    short = states[-2]
    got = np.bincount(data.labels[short["selected"]], minlength=CLASSES)
    assert (got <= short["requested"]).all() and (got < short["requested"]).any()
    pool_sizes = np.bincount(data.labels[split["train"]], minlength=CLASSES) - \
        np.bincount(data.labels[short["train_ids"]], minlength=CLASSES)
    np.testing.assert_array_equal(got, np.minimum(short["requested"], pool_sizes))  # what was left


def test_ent_keeps_the_highest_entropy_of_class_distributed_candidates(tiny_data, model, source_weights, tmp_path):
    data, split = tiny_data
    states = al.run_active_learning(model, data, split, tmp_path, _config("ENT", iterations=2), source_weights)
    first = states[0]
    shares = np.bincount(data.labels[split["train"]], minlength=CLASSES)
    assert first["requested"] == al._largest_remainder(shares, 15)
    assert np.bincount(data.labels[first["candidates"]], minlength=CLASSES).tolist() == first["requested"]
    model.load_weights(tmp_path / "iteration_0.weights.h5")
    h = al.entropy(al.predict(model, data, np.asarray(first["candidates"])))
    top = np.asarray(first["candidates"])[np.argsort(-h, kind="stable")[:10]]
    assert sorted(first["selected"]) == sorted(top.tolist())


def test_supervised_baseline_trains_on_a_fraction_and_resumes(tiny_data, model, source_weights, tmp_path):
    data, split = tiny_data
    state = al.run_supervised(model, data, split, 0.4, tmp_path, TRAIN, seed=1, initial_weights=source_weights)
    assert len(state["train_ids"]) == 40 and set(state["train_ids"]) <= set(split["train"].tolist())
    assert json.loads((tmp_path / "supervised.json").read_text(encoding="utf-8")) == state
    stamp = (tmp_path / "supervised.json").stat().st_mtime_ns
    assert al.run_supervised(model, data, split, 0.4, tmp_path, TRAIN, seed=1) == state
    assert (tmp_path / "supervised.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="fraction"):
        al.run_supervised(model, data, split, 0.0, tmp_path / "x", TRAIN)


def test_a_non_finite_loss_stops_the_round_before_it_writes(tiny_data, model, source_weights, tmp_path):
    from common.nn.callbacks import NonFiniteLoss

    data, split = tiny_data
    nan, out = tmp_path / "nan.weights.h5", tmp_path / "run"
    model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])  # a source model gone NaN
    model.save_weights(nan)
    try:
        with pytest.raises(NonFiniteLoss) as raised:
            al.run_active_learning(model, data, split, out, _config("ITER"), nan)
    finally:
        al.load_weights(model, source_weights)  # the module's model, as the other tests expect it
    assert str(raised.value) == f"{out}: iteration 0: the loss became NaN at epoch 1, step 1; nothing of this " \
        "epoch was saved"
    assert list(out.iterdir()) == []  # no weights, no iteration_0.json


@pytest.mark.parametrize("kwargs, argument", [
    (dict(strategy="RANDOM"), "strategy"), (dict(budget=0), "budget"), (dict(iterations=0), "iterations"),
])
def test_bad_loop_configuration(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        al.ALConfig(**kwargs)


def test_training_defaults_are_the_papers_and_the_original_codes():
    config = al.TrainConfig()
    assert (config.learning_rate, config.patience) == (1.5e-4, 5)  # paper III
    assert (config.momentum, config.nesterov, config.decay, config.batch_size) == (0.9, True, 1e-6, 128)


@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_follows_keras_2_sgd_with_decay_momentum_and_nesterov(nesterov):
    """The original's ``SGD(lr, decay, momentum=0.9, nesterov)`` of Keras 2, transcribed in NumPy."""
    lr, decay, momentum = 0.1, 0.05, 0.9  # a decay large enough to show in five steps
    optimizer = al.sgd(al.TrainConfig(learning_rate=lr, decay=decay, momentum=momentum, nesterov=nesterov))
    w = keras.Variable(np.array([1.0, -2.0, 0.5], np.float32))
    grads = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    expected, v = np.array([1.0, -2.0, 0.5]), np.zeros(3)
    for t, g in enumerate(grads):
        optimizer.apply([keras.ops.convert_to_tensor(g)], [w])
        lr_t = lr / (1.0 + decay * t)  # Keras 2: the step count before this update
        v = momentum * v - lr_t * g
        expected = expected + (momentum * v - lr_t * g if nesterov else v)
        np.testing.assert_allclose(np.asarray(w), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(learning_rate=0.0), "learning_rate"), (dict(momentum=1.0), "momentum"), (dict(decay=-1e-6), "decay"),
    (dict(batch_size=0), "batch_size"), (dict(patience=0), "patience"), (dict(stain_augment=-0.05), "stain_augment"),
    (dict(stain_augment=1.0), "stain_augment"),
])
def test_bad_training_configuration(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        al.TrainConfig(**kwargs)


def test_each_round_restarts_the_momenta_and_the_decay_step_count():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    x, y = np.random.default_rng(1).random((8, 3), dtype=np.float32), np.array([0, 1] * 4)
    al._fresh_optimizer(model, TRAIN)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 2 and any(np.abs(np.asarray(v)).sum() > 0
                                                        for v in model.optimizer.variables[1:])
    compiled = model.optimizer
    al._fresh_optimizer(model, TRAIN)  # the next round: same optimizer object, state back to zero
    assert model.optimizer is compiled and int(model.optimizer.iterations) == 0
    assert all(not np.asarray(v).any() for v in model.optimizer.variables)


@pytest.fixture(scope="module")
def tiny_store(tiny_data, tmp_path_factory):
    """The same 150 triplets written as three TFRecord shards (PNG tiles) and opened as streamed pools."""
    data, _ = tiny_data
    folder = tmp_path_factory.mktemp("store")
    for index, part in enumerate(np.array_split(np.arange(len(data.labels)), 3)):
        arrays = {name: tiles[part] for name, tiles in zip(store.SHARD_KEYS, data.tiles)}
        store.write_shard(folder / f"s{index}.tfrecord", {**arrays, "label": data.labels[part],
                                                          "point": np.zeros((len(part), 2))})
    return store.open_pools(folder, ["s0", "s1", "s2"], TILE)


def test_streamed_triplets_give_the_same_loop_as_triplets_in_ram(tiny_data, tiny_store, model, source_weights,
                                                                tmp_path):
    data, split = tiny_data
    config = _config("ITER", iterations=2)
    in_ram = al.run_active_learning(model, data, split, tmp_path / "ram", config, source_weights)
    streamed = al.run_active_learning(model, tiny_store, split, tmp_path / "stream", config, source_weights)
    for a, b in zip(in_ram, streamed):  # lossless tiles, the same batches in the same order: the same run
        assert a["train_ids"] == b["train_ids"] and a["selected"] == b["selected"]
        np.testing.assert_allclose(a["val"]["fnr"], b["val"]["fnr"])
        np.testing.assert_allclose(a["test"]["f1"], b["test"]["f1"])
    probabilities = [al.predict(model, source, split["test"]) for source in (data, tiny_store)]
    np.testing.assert_allclose(probabilities[0], probabilities[1], atol=1e-6)


class Recording:
    """A triplet source that notes the stain jitter each ``batches`` call asks for."""

    def __init__(self, source):
        self.source, self.labels, self.calls = source, source.labels, []

    def batches(self, ids, batch_size, stain_sigma=0.0, seed=0):
        self.calls.append((len(ids), stain_sigma, seed))
        return self.source.batches(ids, batch_size, stain_sigma, seed)


def test_stain_augment_jitters_training_batches_only(tiny_data, tiny_store, model, source_weights, tmp_path):
    _, split = tiny_data
    source = Recording(tiny_store)
    config = dataclasses.replace(TRAIN, epochs=2, stain_augment=0.05)
    state = al.run_supervised(model, source, split, 0.2, tmp_path, config, seed=3, initial_weights=source_weights)
    trained = [call for call in source.calls if call[0] == len(state["train_ids"])]
    assert len(trained) == 2 and all(sigma == 0.05 for _, sigma, _ in trained)
    assert trained[0][2] != trained[1][2]  # a new draw every epoch
    assert all(sigma == 0 for n, sigma, _ in source.calls if n != len(state["train_ids"]))  # val, test: as they are
    with pytest.raises(ValueError, match="stain_sigma 0.05: triplets in RAM are not stain-augmented"):
        al.train(model, tiny_data[0], split["train"], split["val"], config, seed=0)
