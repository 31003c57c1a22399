"""TRI-AL's query strategies (paper III): how a round of Algorithm 1 draws the next samples, and when it stops.

``STRATEGIES`` holds one object per strategy of Table II, by name: ``ITER``
allocates the budget S over the classes by their false-negative rates on
the validation slides (``allocate_by_fnr``, Algorithm 1 line 8) and draws
uniformly within a class (``draw_by_class``); ``OOD`` does the same until a
class pool runs short; ``ENT`` draws candidates by the class shares of the
training set and keeps the S of highest predictive entropy
(``select_highest_entropy``). The loop (``tri_al.active_learning``) asks a
strategy for its ``query``, ``finished`` and ``rounds`` and names none.

``RANDOM``, after them, is not the paper's: the TRI-AL study's extra arm
(issue 36), ITER's cumulative schedule with S drawn uniformly from the pools,
blind to class and FNR, so that the study can tell the FNR allocation from
the schedule it runs in.
"""

from __future__ import annotations

import abc
import dataclasses

import numpy as np

from tri_al.training import predict


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


@dataclasses.dataclass(frozen=True)
class Draw:
    """What one round's query drew: N_i asked of each class pool, the ids drawn, whether a pool ran short."""

    requested: list[int]
    selected: list[int]
    exhausted: bool
    candidates: list[int] | None = None  # ENT: the candidates it scored


class Strategy(abc.ABC):
    """A query strategy of paper III: how a round draws (``query``), after which round the loop stops
    (``finished``), and at most how many rounds it trains (``rounds``).

    ``config`` is the loop's ``tri_al.active_learning.ALConfig`` (J, S, the candidates, OOD's safety stop); it is
    not imported here, since the loop's module imports this one.
    """

    name: str

    def rounds(self, config) -> int:
        """The loop's bound: J rounds."""
        return config.iterations

    def finished(self, config, j: int, exhausted: bool) -> bool:
        """Whether round ``j`` is the last (nothing is drawn after it); ``exhausted``: round j-1's draw ran short."""
        return j + 1 >= self.rounds(config)

    @abc.abstractmethod
    def query(self, model, data, config, fnr, pools: dict, train_ids, rng) -> Draw:
        """The ids added to X_j for round j + 1, drawn from the class ``pools`` P with ``rng``; ``fnr``: on V."""


class Iter(Strategy):
    """TRI-AL_ITER: N_i = FNR_i * S / sum(FNR) per class (Algorithm 1, line 8), uniform within a class; J rounds."""

    name = "ITER"

    def query(self, model, data, config, fnr, pools, train_ids, rng) -> Draw:
        counts = allocate_by_fnr(fnr, config.budget)
        selected, short = draw_by_class(pools, counts, rng)
        return Draw(counts, selected.tolist(), short)


class OutOfData(Iter):
    """TRI-AL_OOD: ITER's draws until a class pool cannot give its N_i; it takes what is left, trains once more."""

    name = "OOD"

    def rounds(self, config) -> int:
        return config.max_iterations  # a safety stop: the pools end the loop first

    def finished(self, config, j: int, exhausted: bool) -> bool:
        return exhausted or super().finished(config, j, exhausted)


class Entropy(Strategy):
    """TRI-AL_ENT: ``candidates`` drawn by the class shares delta of the whole training set X, of which the S of
    highest predictive entropy; J rounds."""

    name = "ENT"

    def query(self, model, data, config, fnr, pools, train_ids, rng) -> Draw:
        counts = _largest_remainder(np.bincount(data.labels[train_ids], minlength=len(fnr)), config.candidates)
        candidates, short = draw_by_class(pools, counts, rng)
        chosen = select_highest_entropy(candidates, predict(model, data, candidates), config.budget)
        return Draw(counts, chosen.tolist(), short or len(chosen) < config.budget, candidates.tolist())


class Random(Strategy):
    """TRI-AL_RANDOM, not the paper's (the study's extra arm, issue 36): ITER's loop (the same X0, J rounds of S,
    each fine-tuned from the previous round's weights) with S drawn uniformly from all the pools together, blind
    to class and FNR; a pool of fewer than S gives all it has (``exhausted``).

    ITER against RANDOM is the FNR allocation (Algorithm 1, line 8) against no heuristic at all, the cumulative
    schedule being the same. ``requested`` records the per-class counts the uniform draw came to.
    """

    name = "RANDOM"

    def query(self, model, data, config, fnr, pools, train_ids, rng) -> Draw:
        pool = np.concatenate([np.zeros(0, np.int64), *(pools[label] for label in sorted(pools))]).astype(np.int64)
        take = min(config.budget, len(pool))
        selected = np.sort(rng.choice(pool, take, replace=False)) if take else pool
        counts = np.bincount(data.labels[selected], minlength=len(fnr)).tolist()
        return Draw(counts, selected.tolist(), len(pool) < config.budget)


# Table II's order, then the study's RANDOM.
STRATEGIES = {s.name: s for s in (Iter(), OutOfData(), Entropy(), Random())}
