"""TRI-AL's active-learning loop (paper Algorithm 1) and the supervised baselines (TRI-SL).

``data`` is a triplet source (``tri_al.sources``): ``labels`` (N,) in RAM
and tiles streamed one batch at a time (``common.slides.triplets.load_pools``
for a triplet folder of any size), or ``tiles`` (three uint8 arrays
(N, T, T, 3) in 2.5x, 10x, 40x order) and ``labels`` already in RAM; a sample
id is an index into them. ``split`` maps "train", "val", "test" to id arrays,
split by slide upstream (``common.slides.triplets.split_slides``).

A strategy is one object of ``tri_al.strategies.STRATEGIES`` (its query, its
stopping rule, its number of rounds), chosen by ``ALConfig.strategy``; a
round trains and scores the model with ``tri_al.training``. Both modules'
names are also importable from here, where they lived before the split
(``tri_al.active_learning.train``). A run writes, per
iteration j, ``logs/iteration_<j>/`` (TensorBoard events and ``history.csv``,
one row per epoch), ``iteration_<j>.weights.h5`` and then
``iteration_<j>.json`` (a ``LoopState``: training ids, drawn ids, FNR,
validation and test metrics, class shares delta). The JSON is written last
and atomically, so it marks a finished iteration: a rerun loads finished
iterations and goes on from the last one's weights. Draws use a generator
seeded by (seed, j), and training is seeded per iteration, so a resumed run
draws what an uninterrupted one draws. A NaN or infinite loss ends the loop
with ``common.nn.callbacks.NonFiniteLoss`` naming the run and the iteration,
nothing of that iteration written (its logs hold no epoch). A state file
that is not one (``iteration_<j>.json``, ``supervised.json``) is a
``common.errors.DataError`` naming it.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import warnings

import numpy as np

from common import atomic, errors  # stdlib only: this module stays keras-only
from tri_al.sources import as_source
from tri_al.strategies import (
    STRATEGIES,
    Draw,
    Entropy,
    Iter,
    OutOfData,
    Random,
    Strategy,
    allocate_by_fnr,
    draw_by_class,
    entropy,
    select_highest_entropy,
)
from tri_al.training import (
    EVAL_BATCH,
    LOSS,
    TrainConfig,
    class_metrics,
    epoch_logs,
    evaluate,
    fresh_logs,
    load_weights,
    predict,
    sgd,
    train,
)

# The loop's own names, and those of the strategies and the training it runs, which lived here before the split
# (``tri_al.active_learning.train`` keeps working).
__all__ = ["SUPERVISED_FIELDS", "ALConfig", "LoopState", "class_shares", "initial_subset", "load_supervised",
           "run_active_learning", "run_supervised",
           "STRATEGIES", "Draw", "Entropy", "Iter", "OutOfData", "Random", "Strategy", "allocate_by_fnr",
           "draw_by_class", "entropy", "select_highest_entropy",
           "EVAL_BATCH", "LOSS", "TrainConfig", "class_metrics", "epoch_logs", "evaluate", "load_weights", "predict",
           "sgd", "train"]


@dataclasses.dataclass
class ALConfig:
    """Active-learning settings (paper III: X0 25000 per class, S 20000, J 5, ENT candidates 30000).

    ``strategy`` names the query strategy, a key of ``STRATEGIES``.
    """

    strategy: str = "ITER"
    iterations: int = 5
    budget: int = 20000
    candidates: int = 30000
    initial_per_class: int = 25000
    max_iterations: int = 50  # OOD's safety stop
    seed: int = 0
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raises ValueError naming the first bad field; ``run_active_learning`` checks again (fields may change)."""
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {tuple(STRATEGIES)}, got {self.strategy!r}")
        for field in ("iterations", "budget", "candidates", "initial_per_class", "max_iterations"):
            if not getattr(self, field) >= 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if not isinstance(self.train, TrainConfig):
            raise ValueError(f"train must be a TrainConfig, got {self.train!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopState:
    """Round j of Algorithm 1 trained, scored and queried: what ``iteration_<j>.json`` holds.

    The pools P and the random generators are not stored: P is the training set less X_0 and every draw so
    far, and round j draws with a generator seeded by (seed, 1, j), so a resumed loop rebuilds both and
    draws what an uninterrupted one draws.
    """

    iteration: int
    strategy: str
    train_ids: list[int]  # X_j
    delta: list[float]  # delta_i: class shares of X_j (paper II.C)
    val: dict  # class_metrics on V; its FNR drives ITER's and OOD's N_i
    test: dict
    requested: list[int] | None = None  # N_i (ENT: candidates per class); none once done
    candidates: list[int] | None = None  # ENT only
    selected: list[int]  # drawn into X_{j+1}; empty once done
    exhausted: bool  # a class pool could not give its N_i
    done: bool  # the loop ends with this round

    def as_dict(self) -> dict:
        """The file's JSON object: the fields in this order, None ones left out, as the loop always wrote it."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def save(self, path) -> None:
        """Writes the file atomically: whole, or a ``WriteError`` naming it and the previous file kept."""
        atomic.write_json(path, self.as_dict())

    @classmethod
    def load(cls, path) -> LoopState:
        """Reads an ``iteration_<j>.json``; a file that is not one is a ``DataError`` naming it."""
        path = pathlib.Path(path)
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (TypeError, ValueError) as error:  # not JSON, not an object, a field missing or unknown
            raise errors.DataError(f"{path}: not the state of a TRI-AL iteration ({error}); move it away to redo "
                                   "the iteration") from None

    def __getitem__(self, key: str):
        """``state["selected"]``, as when states were dicts: deprecated, read ``state.selected``."""
        warnings.warn(f"LoopState[{key!r}] is deprecated; read the attribute .{key}", DeprecationWarning,
                      stacklevel=2)
        return self.as_dict()[key]


def class_shares(labels, num_classes: int) -> list[float]:
    """delta_i: the share of each class in a training set (paper II.C)."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)
    return (counts / max(1, counts.sum())).tolist()


def initial_subset(labels, train_ids, per_class: int, seed: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """X0 (``per_class`` random ids of each class, or all a class has) and the pools P (the rest)."""
    rng = np.random.default_rng([seed, 0])
    x0, pools = [], {}
    for label in np.unique(labels[train_ids]):
        ids = rng.permutation(np.sort(train_ids[labels[train_ids] == label]))
        x0.append(ids[:per_class])
        pools[int(label)] = np.sort(ids[per_class:])
    return np.sort(np.concatenate(x0)), pools


def _round(model, data, ids: dict, current, pools, config: ALConfig, j: int, exhausted: bool, run: str,
           callbacks) -> LoopState:
    """Algorithm 1, lines 5-9: trains on X_j (``current``), scores V and the test slides, queries X_{j+1}."""
    strategy = STRATEGIES[config.strategy]
    train(model, data, current, ids["val"], config.train, seed=config.seed * 1000 + j, run=run, callbacks=callbacks)
    val, test = evaluate(model, data, ids["val"]), evaluate(model, data, ids["test"])
    done = strategy.finished(config, j, exhausted)
    rng = np.random.default_rng([config.seed, 1, j])
    drawn = {"selected": [], "exhausted": False} if done else \
        dataclasses.asdict(strategy.query(model, data, config, val["fnr"], pools, ids["train"], rng))
    return LoopState(iteration=j, strategy=config.strategy, train_ids=current.tolist(),
                     delta=class_shares(data.labels[current], model.output_shape[-1]), val=val, test=test,
                     done=done, **drawn)


def _resumed(path: pathlib.Path, j: int, strategy: str) -> LoopState:
    """A finished iteration's state, checked to be iteration ``j`` of ``strategy``'s loop."""
    state = LoopState.load(path)
    if (state.iteration, state.strategy) != (j, strategy):
        raise errors.DataError(f"{path}: holds iteration {state.iteration} of {state.strategy}, not iteration {j} "
                               f"of {strategy}; give each loop a folder of its own")
    return state


def run_active_learning(model, data, split, out, config: ALConfig, initial_weights=None, callback=None,
                        log_callbacks=epoch_logs) -> list[LoopState]:
    """Algorithm 1: train on X_j, measure FNR on V, draw N_i per class from P; resumable.

    Args:
        model: a compiled-or-not TRI-CNN; its weights are overwritten.
        data: a triplet source, or ``tiles`` and ``labels`` arrays (see module docstring).
        split: "train", "val", "test" id arrays (disjoint slides).
        out: run folder (created); finished iterations found there are kept.
        config: strategy and sizes.
        initial_weights: a ``.weights.h5`` file of the source-domain model to
            start from (transfer, paper III); ``None`` keeps ``model``'s weights.
        callback: called as ``callback(j, state)`` after each iteration.
        log_callbacks: makes the Keras callbacks that log an iteration's epochs into a folder
            (``out/logs/iteration_<j>``); ``None``: no logs.

    Returns:
        The iterations' ``LoopState``s, first to last (``state["selected"]``, as when they were dicts, still
        reads for one release, with a DeprecationWarning).
    """
    config.validate()
    data, out = as_source(data), pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids = {k: np.asarray(split[k], np.int64) for k in ("train", "val", "test")}
    current, pools = initial_subset(data.labels, ids["train"], config.initial_per_class, config.seed)
    weights, states = initial_weights, []
    for j in range(STRATEGIES[config.strategy].rounds(config)):
        state_path, weights_path = out / f"iteration_{j}.json", out / f"iteration_{j}.weights.h5"
        if state_path.exists():
            state = _resumed(state_path, j, config.strategy)
        else:
            if weights is not None:
                load_weights(model, weights)
            state = _round(model, data, ids, current, pools, config, j, bool(states and states[-1].exhausted),
                           f"{out}: iteration {j}", fresh_logs(out / "logs" / f"iteration_{j}", log_callbacks))
            atomic.save_weights(model, weights_path)
            state.save(state_path)  # last: it marks the iteration finished
        states.append(state)
        weights = weights_path
        if callback is not None:
            callback(j, state)
        if state.done:
            break
        selected = np.asarray(state.selected, np.int64)
        current = np.sort(np.concatenate([current, selected]))
        pools = {c: np.setdiff1d(p, selected) for c, p in pools.items()}
    load_weights(model, weights)
    return states


def run_supervised(model, data, split, fraction: float, out, config: TrainConfig, seed: int = 0,
                   initial_weights=None, log_callbacks=epoch_logs) -> dict:
    """TRI-SL: trains on a random ``fraction`` of the training set from the source weights; resumable.

    Its epochs are logged in ``out/logs`` (``log_callbacks``, as ``run_active_learning``'s).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    out = pathlib.Path(out)
    state_path = out / "supervised.json"
    if state_path.exists():
        return load_supervised(state_path)
    data = as_source(data)
    train_ids = np.sort(np.asarray(split["train"], np.int64))
    rng = np.random.default_rng([seed, 2, round(fraction * 1000)])
    subset = np.sort(rng.choice(train_ids, max(1, round(fraction * len(train_ids))), replace=False))
    if initial_weights is not None:
        load_weights(model, initial_weights)
    train(model, data, subset, np.asarray(split["val"], np.int64), config, seed=seed * 1000 + 999,
          run=f"{out}: supervised", callbacks=fresh_logs(out / "logs", log_callbacks))
    num_classes = model.output_shape[-1]
    state = {"fraction": fraction, "train_ids": subset.tolist(),
             "delta": class_shares(data.labels[subset], num_classes),
             "val": evaluate(model, data, np.asarray(split["val"], np.int64)),
             "test": evaluate(model, data, np.asarray(split["test"], np.int64)), "done": True}
    atomic.save_weights(model, out / "supervised.weights.h5")
    atomic.write_json(state_path, state)
    return state


SUPERVISED_FIELDS = ("fraction", "train_ids", "delta", "val", "test", "done")  # supervised.json's, in its order


def load_supervised(path) -> dict:
    """Reads a finished TRI-SL run's ``supervised.json``; a file that is not one is a ``DataError`` naming it."""
    path = pathlib.Path(path)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:  # not JSON, not UTF-8
        raise _not_supervised(path, str(error)) from None
    if not isinstance(state, dict):
        raise _not_supervised(path, f"a JSON {type(state).__name__}, not an object")
    missing = [field for field in SUPERVISED_FIELDS if field not in state]
    if missing:
        raise _not_supervised(path, f"no {', '.join(map(repr, missing))}")
    return state


def _not_supervised(path: pathlib.Path, why: str) -> errors.DataError:
    return errors.DataError(f"{path}: not the state of a TRI-SL run ({why}); move it away to train it again")
