"""TRI-AL's loop (tri_al/active_learning.py): Algorithm 1 resumable, each strategy end to end, TRI-SL, state files.

The strategies alone are tests/tri_al/test_strategies.py; training one model, tests/tri_al/test_training.py.
"""

import dataclasses
import json
import pathlib
import types

import numpy as np
import pytest

import tri_al
from common import atomic
from common.errors import DataError
from common.slides import store
from tests import helpers
from tri_al import active_learning as al
from tri_al import strategies

TILE = 32
CLASSES = 5
HEAD = 16  # hidden units of the tiny models' head (the original's 4096 is for the real thing)


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
    return tri_al.build_model(tile_size=TILE, base_filters=4, head_units=HEAD)


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
    stale = tmp_path / "cut" / "logs" / "iteration_3" / "train" / "events.out.tfevents.killed"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"a try of iteration 3 killed mid-epoch")
    fresh = tri_al.build_model(tile_size=TILE, base_filters=4, head_units=HEAD)  # as a new process would
    resumed = al.run_active_learning(fresh, data, split, tmp_path / "cut", _config("ITER"), source_weights)
    assert [(tmp_path / "cut" / f"iteration_{j}.json").stat().st_mtime_ns for j in range(3)] == stamps
    assert len(whole) == len(resumed) == 4 and whole[-1].done and not whole[-1].selected
    for a, b in zip(whole, resumed):
        assert a.selected == b.selected and a.train_ids == b.train_ids
        np.testing.assert_allclose(a.val["fnr"], b.val["fnr"])
    assert len(whole[1].train_ids) == len(whole[0].train_ids) + 10  # S = 10 drawn per iteration
    assert sum(whole[0].delta) == pytest.approx(1.0)
    for state in whole[:-1]:
        assert np.bincount(data.labels[state.selected], minlength=CLASSES).tolist() == state.requested
        assert state.requested == tri_al.allocate_by_fnr(state.val["fnr"], 10)
    for j in range(4):  # every iteration's epochs, as zoo train logs them; the killed try's events are gone
        _assert_logged(tmp_path / "whole" / "logs" / f"iteration_{j}", epochs=1)
    assert not stale.exists()
    _assert_logged(tmp_path / "cut" / "logs" / "iteration_3", epochs=1)
    with pytest.warns(DeprecationWarning, match=r"LoopState\['selected'\] is deprecated; read the attribute"):
        assert whole[0]["selected"] == whole[0].selected  # the dicts states were, for one release


def _assert_logged(folder, epochs: int):
    """``history.csv`` has a row per epoch with the validation loss, TensorBoard's events the epoch scalars."""
    import tensorflow as tf

    with open(folder / "history.csv", encoding="utf-8") as file:
        header, *rows = file.read().splitlines()
    assert header == "epoch,accuracy,loss,val_accuracy,val_loss" and [r.split(",")[0] for r in rows] == \
        [str(e) for e in range(epochs)]
    assert all(np.isfinite(float(r.split(",")[-1])) for r in rows)
    for run, expected in (("train", {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"}),
                          ("validation", {"epoch_loss", "epoch_accuracy"})):
        tags = {value.tag for path in (folder / run).glob("events.out.tfevents.*")
                for record in tf.data.TFRecordDataset(str(path))
                for value in tf.compat.v1.Event.FromString(record.numpy()).summary.value}
        assert expected <= tags, (run, tags)


def test_ood_stops_once_a_class_pool_runs_short(tiny_data, model, source_weights, tmp_path):
    data, split = tiny_data
    states = al.run_active_learning(model, data, split, tmp_path, _config("OOD", budget=40), source_weights)
    assert [s.exhausted for s in states][-2:] == [True, False] and states[-1].done
    assert not any(s.exhausted for s in states[:-2])
    short = states[-2]
    got = np.bincount(data.labels[short.selected], minlength=CLASSES)
    assert (got <= short.requested).all() and (got < short.requested).any()
    pool_sizes = np.bincount(data.labels[split["train"]], minlength=CLASSES) - \
        np.bincount(data.labels[short.train_ids], minlength=CLASSES)
    np.testing.assert_array_equal(got, np.minimum(short.requested, pool_sizes))  # what was left


def test_ent_keeps_the_highest_entropy_of_class_distributed_candidates(tiny_data, model, source_weights, tmp_path):
    data, split = tiny_data
    states = al.run_active_learning(model, data, split, tmp_path, _config("ENT", iterations=2), source_weights)
    first = states[0]
    shares = np.bincount(data.labels[split["train"]], minlength=CLASSES)
    assert first.requested == strategies._largest_remainder(shares, 15)
    assert np.bincount(data.labels[first.candidates], minlength=CLASSES).tolist() == first.requested
    assert list(json.loads((tmp_path / "iteration_0.json").read_text(encoding="utf-8"))) == [
        "iteration", "strategy", "train_ids", "delta", "val", "test", "requested", "candidates", "selected",
        "exhausted", "done"]  # the file's fields and their order, as before LoopState
    model.load_weights(tmp_path / "iteration_0.weights.h5")
    h = al.entropy(al.predict(model, data, np.asarray(first.candidates)))
    top = np.asarray(first.candidates)[np.argsort(-h, kind="stable")[:10]]
    assert sorted(first.selected) == sorted(top.tolist())


def test_supervised_baseline_trains_on_a_fraction_and_resumes(tiny_data, model, source_weights, tmp_path):
    data, split = tiny_data
    state = al.run_supervised(model, data, split, 0.4, tmp_path, TRAIN, seed=1, initial_weights=source_weights)
    assert len(state["train_ids"]) == 40 and set(state["train_ids"]) <= set(split["train"].tolist())
    assert json.loads((tmp_path / "supervised.json").read_text(encoding="utf-8")) == state
    _assert_logged(tmp_path / "logs", epochs=1)
    stamp = (tmp_path / "supervised.json").stat().st_mtime_ns
    assert al.run_supervised(model, data, split, 0.4, tmp_path, TRAIN, seed=1) == state
    assert (tmp_path / "supervised.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="fraction"):
        al.run_supervised(model, data, split, 0.0, tmp_path / "x", TRAIN)


def test_a_non_finite_loss_stops_the_round_before_it_writes(tiny_data, model, source_weights, tmp_path, request):
    from common.nn.callbacks import NonFiniteLoss

    data, split = tiny_data
    helpers.free_stopped_training(request)
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
    # No weights, no iteration_0.json, no epoch logged: only the header of TensorBoard's file, opened at the start.
    assert [p.relative_to(out).parent for p in out.rglob("*") if p.is_file()] == [
        pathlib.Path("logs/iteration_0/train")]


@pytest.mark.parametrize("kwargs, message", [
    (dict(strategy="BALD"), "strategy must be one of ('ITER', 'OOD', 'ENT', 'RANDOM'), got 'BALD'"),
    (dict(budget=0), "budget must be >= 1, got 0"), (dict(iterations=0), "iterations must be >= 1, got 0"),
    (dict(max_iterations=float("nan")), "max_iterations must be >= 1, got nan"),
    (dict(train={"epochs": 1}), "train must be a TrainConfig, got {'epochs': 1}"),
])
def test_bad_loop_configuration(kwargs, message):
    with pytest.raises(ValueError) as raised:
        al.ALConfig(**kwargs)
    assert str(raised.value) == message
    config = al.ALConfig()
    config.budget = 0  # ALConfig is mutable: the loop checks it again before it starts
    with pytest.raises(ValueError, match=r"^budget must be >= 1, got 0$"):
        al.run_active_learning(None, None, {}, "never-written", config)


def _state_of_todays_format(labels, train_ids, x0, pools) -> dict:
    """iteration_0.json as the loop wrote it before LoopState: its fields, by hand, in their order."""
    metrics = {"f1": [0.5] * CLASSES, "fnr": [0.1, 0.3, 0.0, 0.6, 0.0], "micro_f1": 0.5, "macro_f1": 0.5}
    selected = sorted(int(i) for c in (0, 1, 3) for i in pools[c][:2])
    return {"iteration": 0, "strategy": "ITER", "train_ids": x0.tolist(),
            "delta": al.class_shares(labels[x0], CLASSES), "val": metrics, "test": metrics,
            "requested": [2, 2, 0, 2, 0], "selected": selected, "exhausted": False, "done": False}


def test_a_loop_written_before_loop_state_resumes(tiny_data, model, source_weights, tmp_path):
    data, split = tiny_data
    x0, pools = al.initial_subset(data.labels, split["train"], 3, seed=5)
    written = _state_of_todays_format(data.labels, split["train"], x0, pools)
    (tmp_path / "iteration_0.json").write_text(json.dumps(written), encoding="utf-8")
    (tmp_path / "iteration_0.weights.h5").write_bytes(source_weights.read_bytes())
    before = (tmp_path / "iteration_0.json").read_bytes()
    states = al.run_active_learning(model, data, split, tmp_path, _config("ITER", iterations=2), source_weights)
    assert (tmp_path / "iteration_0.json").read_bytes() == before  # read, not retrained
    assert states[0] == al.LoopState.load(tmp_path / "iteration_0.json")
    assert list(states[0].as_dict().items()) == list(written.items())  # the same fields in the same order
    assert states[1].train_ids == sorted(x0.tolist() + written["selected"]) and states[1].done
    assert not (tmp_path / "logs" / "iteration_0").exists()
    _assert_logged(tmp_path / "logs" / "iteration_1", epochs=1)


def test_a_state_that_cannot_be_written_leaves_the_previous_file(tmp_path):
    x0 = np.arange(3)
    state = al.LoopState(**_state_of_todays_format(np.zeros(30, int), None, x0, {0: [4], 1: [5], 3: [6]}))
    path = tmp_path / "iteration_0.json"
    path.write_text("the previous state", encoding="utf-8")
    before = helpers.checksums(tmp_path)
    with helpers.file_limit(64), pytest.raises(atomic.WriteError) as raised:  # a full disk, in this process
        state.save(path)
    assert str(raised.value) == f"{path}: not written: file too large; the previous file is untouched"
    assert helpers.checksums(tmp_path) == before
    state.save(path)
    assert al.LoopState.load(path) == state


REDO = "; move it away to redo the iteration"
RETRAIN = "; move it away to train it again"
ENT_STATE = json.dumps({**_state_of_todays_format(np.zeros(30, int), None, np.arange(3), {0: [], 1: [], 3: []}),
                        "strategy": "ENT"})
# Each loop run on a folder holding only its state file: it reads the file before anything else.
READS_STATE = {
    "iteration_0.json": lambda data, split, out: al.run_active_learning(None, data, split, out, _config("ITER")),
    "supervised.json": lambda data, split, out: al.run_supervised(None, data, split, 0.5, out, TRAIN),
}


@pytest.mark.parametrize("name, content, message", [
    ("iteration_0.json", "{", "not the state of a TRI-AL iteration (Expecting property name enclosed in double "
                              f"quotes: line 1 column 2 (char 1)){REDO}"),
    ("iteration_0.json", "[]", "not the state of a TRI-AL iteration (tri_al.active_learning.LoopState() argument "
                               f"after ** must be a mapping, not list){REDO}"),
    ("iteration_0.json", '{"iteration": 0}',
     "not the state of a TRI-AL iteration (LoopState.__init__() missing 8 required keyword-only arguments: "
     f"'strategy', 'train_ids', 'delta', 'val', 'test', 'selected', 'exhausted', and 'done'){REDO}"),
    ("iteration_0.json", ENT_STATE, "holds iteration 0 of ENT, not iteration 0 of ITER; give each loop a folder of "
                                    "its own"),
    ("supervised.json", "", f"not the state of a TRI-SL run (Expecting value: line 1 column 1 (char 0)){RETRAIN}"),
    ("supervised.json", "[]", f"not the state of a TRI-SL run (a JSON list, not an object){RETRAIN}"),
    ("supervised.json", '{"fraction": 0.5, "train_ids": [1]}',
     f"not the state of a TRI-SL run (no 'delta', 'val', 'test', 'done'){RETRAIN}"),
])
def test_a_state_file_that_is_not_this_loops_is_named(tmp_path, name, content, message):
    (tmp_path / name).write_text(content, encoding="utf-8")
    data = types.SimpleNamespace(tiles=[], labels=np.zeros(30, int))
    split = {"train": np.arange(20), "val": np.arange(20, 25), "test": np.arange(25, 30)}
    before = helpers.checksums(tmp_path)
    with pytest.raises(DataError) as raised:  # before any training: the model is never touched
        READS_STATE[name](data, split, tmp_path)
    assert str(raised.value) == f"{tmp_path / name}: {message}"
    assert helpers.checksums(tmp_path) == before  # the file stays for its owner to look at


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
        assert a.train_ids == b.train_ids and a.selected == b.selected
        np.testing.assert_allclose(a.val["fnr"], b.val["fnr"])
        np.testing.assert_allclose(a.test["f1"], b.test["f1"])
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
