"""TRI-AL's active-learning loop (paper Algorithm 1), its query strategies and the supervised baselines.

``data`` is a triplet source (``tri_al.sources``): ``labels`` (N,) in RAM
and tiles streamed one batch at a time (``common.slides.triplets.load_pools``
for a triplet folder of any size), or ``tiles`` (three uint8 arrays
(N, T, T, 3) in 2.5x, 10x, 40x order) and ``labels`` already in RAM; a sample
id is an index into them. ``split`` maps "train", "val", "test" to id arrays,
split by slide upstream (``common.slides.triplets.split_slides``).

A run writes, per iteration j, ``iteration_<j>.weights.h5`` and then
``iteration_<j>.json`` (training ids, drawn ids, FNR, validation and test
metrics, class shares delta). The JSON is written last and atomically, so
it marks a finished iteration: a rerun loads finished iterations and goes on
from the last one's weights. Draws use a generator seeded by (seed, j), and
training is seeded per iteration, so a resumed run draws what an
uninterrupted one draws. A NaN or infinite loss ends the loop with
``common.nn.callbacks.NonFiniteLoss`` naming the run and the iteration,
nothing of that iteration written.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import warnings
import weakref

import keras
import numpy as np

from common import atomic  # stdlib only: this module stays keras-only
from common.nn.callbacks import StopOnNonFiniteLoss
from common.nn.optimizers import build_compiled
from tri_al.sources import as_source

STRATEGIES = ("ITER", "OOD", "ENT")


def _largest_remainder(shares, total: int) -> list[int]:
    """Integers proportional to ``shares`` that sum to ``total`` (Hamilton's method, ties to lower index)."""
    shares = np.asarray(shares, np.float64)
    exact = shares / shares.sum() * total
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts.tolist()


def allocate_by_fnr(fnr, budget) -> list[int]:
    """New samples per class, ``N_i = FNR_i * S / sum(FNR)`` (Algorithm 1, line 8), as integers summing to S.

    Rounding keeps the total exactly ``budget`` (largest remainders); when every
    FNR is zero the budget is split equally.

    Example:

    >>> allocate_by_fnr([0.1, 0.3, 0.0, 0.6, 0.0], 100)
    [10, 30, 0, 60, 0]
    """
    fnr = np.asarray(fnr, np.float64)
    if fnr.ndim != 1 or not len(fnr):
        raise ValueError(f"fnr must be a non-empty list of per-class rates, got {fnr!r}")
    if not np.all(np.isfinite(fnr)) or np.any(fnr < 0) or np.any(fnr > 1):
        raise ValueError(f"fnr must lie in [0, 1], got {fnr.tolist()}")
    if not isinstance(budget, (int, np.integer)) or budget < 0:
        raise ValueError(f"budget must be a non-negative integer, got {budget!r}")
    if fnr.sum() == 0:
        return _largest_remainder(np.ones_like(fnr), int(budget))
    return _largest_remainder(fnr, int(budget))


def entropy(probabilities) -> np.ndarray:
    """Predictive entropy (nats) of each row of class probabilities."""
    p = np.clip(np.asarray(probabilities, np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(-1)


def select_highest_entropy(candidate_ids, probabilities, budget: int) -> np.ndarray:
    """``ENT``: the ``budget`` candidates of highest predictive entropy (ties: the lower id first)."""
    candidate_ids = np.asarray(candidate_ids)
    order = np.lexsort((candidate_ids, -entropy(probabilities)))
    return np.sort(candidate_ids[order[:budget]])


def draw_by_class(pools: dict[int, np.ndarray], counts, rng) -> tuple[np.ndarray, bool]:
    """Draws ``counts[i]`` ids from each class pool; a short pool gives what it has (then ``short`` is True)."""
    drawn, short = [], False
    for label, count in enumerate(counts):
        pool = pools.get(label, np.zeros(0, np.int64))
        if count > len(pool):
            short = True
        take = min(int(count), len(pool))
        drawn.append(rng.choice(pool, take, replace=False) if take else np.zeros(0, np.int64))
    return np.sort(np.concatenate(drawn).astype(np.int64)), short


def class_metrics(y_true, y_pred, num_classes: int) -> dict:
    """Per-class F1 and false-negative rate, micro and macro F1 (classes absent from both count F1 0)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    tp = np.array([np.sum((y_true == c) & (y_pred == c)) for c in range(num_classes)], np.float64)
    fp = np.array([np.sum((y_true != c) & (y_pred == c)) for c in range(num_classes)], np.float64)
    fn = np.array([np.sum((y_true == c) & (y_pred != c)) for c in range(num_classes)], np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.nan_to_num(2 * tp / (2 * tp + fp + fn))
        fnr = np.nan_to_num(fn / (tp + fn))  # a class missing from the set has nothing to miss
    micro = 2 * tp.sum() / max(1.0, 2 * tp.sum() + fp.sum() + fn.sum())
    return {"f1": f1.tolist(), "fnr": fnr.tolist(), "micro_f1": float(micro), "macro_f1": float(f1.mean())}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training of every round: the paper's rate and early stopping, the original code's optimizer and batch.

    Paper III: SGD, lr 1.5e-4, cross-entropy, early stopping with patience 5.
    The original TRI-CNN code, whose hyperparameters the paper reuses: Keras 2's
    ``SGD(decay=1e-6, momentum=0.9, nesterov=True)`` and ``batch_size = 128``.
    """

    learning_rate: float = 1.5e-4
    momentum: float = 0.9
    nesterov: bool = True
    decay: float = 1e-6  # Keras 2's per-step decay: lr_t = lr / (1 + decay * t)
    batch_size: int = 128
    epochs: int = 100
    patience: int = 5
    verbose: int = 0
    stain_augment: float = 0.0  # HED jitter sigma of training batches (not the paper's; 0: off)

    def __post_init__(self):
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if not self.decay >= 0:
            raise ValueError(f"decay must be non-negative, got {self.decay}")
        if not 0 <= self.stain_augment < 1:
            raise ValueError(f"stain_augment (HED jitter sigma) must lie in [0, 1), got {self.stain_augment}")
        for name in ("batch_size", "epochs", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def sgd(config: TrainConfig) -> keras.optimizers.SGD:
    """The original's optimizer in Keras 3: SGD with (Nesterov) momentum and Keras 2's ``decay``.

    Keras 2 scaled the rate by ``1 / (1 + decay * t)``, t the steps taken
    before this one; Keras 3 dropped ``decay``, and ``InverseTimeDecay`` with
    one-step periods is the same rule. The update is the same in both:
    ``v = momentum * v - lr_t * g``, then ``w += momentum * v - lr_t * g``
    (Nesterov) or ``w += v``.
    """
    rate = config.learning_rate
    if config.decay:
        rate = keras.optimizers.schedules.InverseTimeDecay(rate, decay_steps=1, decay_rate=config.decay)
    return keras.optimizers.SGD(rate, momentum=config.momentum, nesterov=config.nesterov)


@dataclasses.dataclass
class ALConfig:
    """Active-learning settings (paper III: X0 25000 per class, S 20000, J 5, ENT candidates 30000)."""

    strategy: str = "ITER"
    iterations: int = 5
    budget: int = 20000
    candidates: int = 30000
    initial_per_class: int = 25000
    max_iterations: int = 50  # OOD's safety stop
    seed: int = 0
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        for name in ("iterations", "budget", "candidates", "initial_per_class", "max_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


EVAL_BATCH = 64  # validation, scoring and test batches
_COMPILED = weakref.WeakKeyDictionary()  # model -> the optimizer settings it was compiled for


def _fresh_optimizer(model, config: TrainConfig) -> None:
    """Compiles once per model and optimizer settings; later rounds zero the optimizer's state (momenta, and
    the step count that ``decay`` follows) instead of retracing."""
    settings = (config.learning_rate, config.momentum, config.nesterov, config.decay)  # what sgd() reads
    if _COMPILED.get(model) == settings and model.optimizer is not None:
        for variable in model.optimizer.variables:
            if not variable.path.endswith("learning_rate"):
                variable.assign(np.zeros(variable.shape, variable.dtype))
        return
    model.compile(optimizer=sgd(config), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    build_compiled(model)
    _COMPILED[model] = settings


def _reseed_dropout(model, seed: int) -> None:
    """Dropout masks from (seed, layer), not from whatever ran in this process before."""
    for index, layer in enumerate(model.layers):
        generator = getattr(layer, "seed_generator", None)
        if generator is not None:
            generator.state.assign(np.array([seed, index], generator.state.dtype))


def train(model, data, train_ids, val_ids, config: TrainConfig, seed: int, run: str = "TRI-AL") -> list[float]:
    """Fits ``model`` on ``train_ids`` from a fresh SGD state, early stopping on the ``val_ids`` loss.

    Epochs are shuffled by a generator seeded with ``seed`` and run one ``fit``
    call each, so a round is the same computation in any process (Keras'
    own shuffling draws from TensorFlow's op-level seeds, which depend on
    what ran before). Batches stream from ``data`` in that order; with
    ``config.stain_augment`` the training batches (not the validation ones)
    get a HED stain jitter seeded by (``seed``, epoch). Returns the validation
    loss per epoch; the weights of the best epoch are kept (paper III: patience
    5). A NaN or infinite training loss raises ``NonFiniteLoss`` naming ``run``,
    the epoch and the step.
    """
    source = as_source(data)
    _fresh_optimizer(model, config)
    _reseed_dropout(model, seed)
    rng = np.random.default_rng(seed)
    val = source.batches(np.asarray(val_ids, np.int64), EVAL_BATCH)
    losses, best, wait, check = [], None, 0, StopOnNonFiniteLoss(run)
    for epoch in range(config.epochs):
        order = rng.permutation(np.asarray(train_ids, np.int64))
        jitter_seed = int(np.random.default_rng([seed, 3, epoch]).integers(2**31)) if config.stain_augment else 0
        model.fit(source.batches(order, config.batch_size, config.stain_augment, jitter_seed), initial_epoch=epoch,
                  epochs=epoch + 1, shuffle=False, verbose=config.verbose, callbacks=[check])
        losses.append(float(model.evaluate(val, verbose=0, return_dict=True)["loss"]))
        if best is None or losses[-1] < min(losses[:-1]):
            best, wait = model.get_weights(), 0
        else:
            wait += 1
            if wait >= config.patience:
                break
    model.set_weights(best)
    return losses


def predict(model, data, ids, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Class probabilities of the given samples, streamed in batches into one array.

    ``predict_on_batch`` per batch rather than ``predict``: Keras' ``predict`` holds every batch's output
    tensor to the end, ~190 bytes a sample (37 MiB for 200k) where this array takes 20.
    """
    probabilities, start = np.zeros((len(ids), model.output_shape[-1]), np.float32), 0
    for x, _ in as_source(data).batches(np.asarray(ids, np.int64), batch_size) if len(ids) else ():
        batch = np.asarray(model.predict_on_batch(x))
        probabilities[start:start + len(batch)] = batch
        start += len(batch)
    return probabilities


def evaluate(model, data, ids) -> dict:
    """Per-class F1 and FNR, micro and macro F1 of the given samples (``class_metrics``)."""
    labels = as_source(data).labels[np.asarray(ids, np.int64)]
    return class_metrics(labels, predict(model, data, ids).argmax(-1), model.output_shape[-1])


def load_weights(model, path) -> None:
    """Loads a ``.weights.h5`` file; the optimizer state in it (if any) is not wanted, a round restarts it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)


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


def _query(model, data, config: ALConfig, state: dict, pools, train_ids, j: int) -> dict:
    """Draws the next samples: by FNR (ITER, OOD) or by entropy among class-distributed candidates (ENT)."""
    rng = np.random.default_rng([config.seed, 1, j])
    num_classes = len(state["val"]["fnr"])
    if config.strategy in ("ITER", "OOD"):
        counts = allocate_by_fnr(state["val"]["fnr"], config.budget)
        selected, short = draw_by_class(pools, counts, rng)
        return {"requested": counts, "selected": selected.tolist(), "exhausted": short}
    # ENT: candidates follow the class distribution delta of the whole training set X.
    counts = _largest_remainder(np.bincount(data.labels[train_ids], minlength=num_classes), config.candidates)
    candidates, short = draw_by_class(pools, counts, rng)
    chosen = select_highest_entropy(candidates, predict(model, data, candidates), config.budget)
    return {"requested": counts, "candidates": candidates.tolist(), "selected": chosen.tolist(),
            "exhausted": short or len(chosen) < config.budget}


def _finished(config: ALConfig, j: int, exhausted: bool) -> bool:
    if config.strategy == "OOD":  # until a class pool could not provide its N_i
        return exhausted or j + 1 >= config.max_iterations
    return j + 1 >= config.iterations


def run_active_learning(model, data, split, out, config: ALConfig, initial_weights=None, callback=None) -> list[dict]:
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

    Returns:
        The iteration states, first to last.
    """
    data = as_source(data)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_ids, val_ids, test_ids = (np.asarray(split[k], np.int64) for k in ("train", "val", "test"))
    current, pools = initial_subset(data.labels, train_ids, config.initial_per_class, config.seed)
    num_classes = model.output_shape[-1]
    weights, states = initial_weights, []
    for j in range(config.max_iterations if config.strategy == "OOD" else config.iterations):
        state_path, weights_path = out / f"iteration_{j}.json", out / f"iteration_{j}.weights.h5"
        if state_path.exists():
            state = json.loads(state_path.read_text(encoding="utf-8"))
        else:
            if weights is not None:
                load_weights(model, weights)
            train(model, data, current, val_ids, config.train, seed=config.seed * 1000 + j, run=f"{out}: iteration {j}")
            state = {"iteration": j, "strategy": config.strategy, "train_ids": current.tolist(),
                     "delta": class_shares(data.labels[current], num_classes),
                     "val": evaluate(model, data, val_ids), "test": evaluate(model, data, test_ids)}
            done = _finished(config, j, bool(states and states[-1]["exhausted"]))
            state.update({"selected": [], "exhausted": False} if done else
                         _query(model, data, config, state, pools, train_ids, j), done=done)
            atomic.save_weights(model, weights_path)
            atomic.write_json(state_path, state)
        states.append(state)
        weights = weights_path
        if callback is not None:
            callback(j, state)
        if state["done"]:
            break
        selected = np.asarray(state["selected"], np.int64)
        current = np.sort(np.concatenate([current, selected]))
        pools = {c: np.setdiff1d(p, selected) for c, p in pools.items()}
    load_weights(model, weights)
    return states


def run_supervised(model, data, split, fraction: float, out, config: TrainConfig, seed: int = 0,
                   initial_weights=None) -> dict:
    """TRI-SL: trains on a random ``fraction`` of the training set from the source weights; resumable."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    out = pathlib.Path(out)
    state_path = out / "supervised.json"
    if state_path.exists():
        return json.loads(state_path.read_text(encoding="utf-8"))
    data = as_source(data)
    train_ids = np.sort(np.asarray(split["train"], np.int64))
    rng = np.random.default_rng([seed, 2, round(fraction * 1000)])
    subset = np.sort(rng.choice(train_ids, max(1, round(fraction * len(train_ids))), replace=False))
    if initial_weights is not None:
        load_weights(model, initial_weights)
    train(model, data, subset, np.asarray(split["val"], np.int64), config, seed=seed * 1000 + 999,
          run=f"{out}: supervised")
    num_classes = model.output_shape[-1]
    state = {"fraction": fraction, "train_ids": subset.tolist(),
             "delta": class_shares(data.labels[subset], num_classes),
             "val": evaluate(model, data, np.asarray(split["val"], np.int64)),
             "test": evaluate(model, data, np.asarray(split["test"], np.int64)), "done": True}
    atomic.save_weights(model, out / "supervised.weights.h5")
    atomic.write_json(state_path, state)
    return state
