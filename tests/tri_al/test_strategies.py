"""TRI-AL's query strategies (tri_al/strategies.py): Algorithm 1's allocation, the draws, entropy, when to stop."""

import types

import numpy as np
import pytest

import tri_al
from tri_al import strategies
from tri_al.active_learning import ALConfig

CLASSES = 5


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
    drawn, short = strategies.draw_by_class(pools, [10, 10, 10], np.random.default_rng(0))
    assert short and len(drawn) == 25
    assert set(np.arange(5)) <= set(drawn.tolist())
    drawn, short = strategies.draw_by_class(pools, [5, 10, 10], np.random.default_rng(0))
    assert not short and len(drawn) == 25 and len(set(drawn.tolist())) == 25


def test_entropy_keeps_exactly_the_highest_entropy_candidates():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(200, CLASSES)) * rng.uniform(0.1, 5, size=(200, 1))
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ids = rng.permutation(1000)[:200]
    chosen = strategies.select_highest_entropy(ids, probabilities, 30)
    h = strategies.entropy(probabilities)
    assert len(chosen) == 30
    assert set(chosen.tolist()) == set(ids[np.argsort(-h)[:30]].tolist())
    assert h[np.isin(ids, chosen)].min() >= h[~np.isin(ids, chosen)].max()
    uniform = np.full((4, CLASSES), 1 / CLASSES)
    np.testing.assert_allclose(strategies.entropy(uniform), np.log(CLASSES))
    assert strategies.select_highest_entropy(np.array([9, 3, 7, 1]), uniform, 2).tolist() == [1, 3]  # ties: lower id


def _config(strategy, **kwargs):
    return ALConfig(strategy, **{"iterations": 4, "budget": 10, "candidates": 15, "initial_per_class": 3, **kwargs})


@pytest.mark.parametrize("name, j, exhausted, finished", [
    ("ITER", 2, False, False), ("ITER", 3, False, True), ("ITER", 1, True, False),
    ("OOD", 3, False, False), ("OOD", 1, True, True), ("OOD", 5, False, True),
    ("ENT", 2, True, False), ("ENT", 3, False, True),
    ("RANDOM", 2, False, False), ("RANDOM", 3, False, True), ("RANDOM", 1, True, False),  # ITER's rule
])
def test_each_strategy_has_its_stopping_rule_and_bound(name, j, exhausted, finished):
    config = _config(name, max_iterations=6)  # J = 4
    strategy = strategies.STRATEGIES[name]
    assert strategy.name == name and strategy.rounds(config) == (6 if name == "OOD" else 4)
    assert strategy.finished(config, j, exhausted) is finished


def test_the_strategies_are_table_iis_and_iter_draws_n_i_per_class():
    assert list(strategies.STRATEGIES) == ["ITER", "OOD", "ENT", "RANDOM"]  # Table II's, then the study's
    labels = np.repeat(np.arange(3), 10)
    pools = {c: np.flatnonzero(labels == c)[2:] for c in range(3)}
    for name in ("ITER", "OOD"):
        draw = strategies.STRATEGIES[name].query(None, types.SimpleNamespace(labels=labels), _config(name, budget=6),
                                                 [0.5, 0.0, 0.25], pools, np.arange(30), np.random.default_rng(0))
        assert draw.requested == [4, 0, 2] and not draw.exhausted and draw.candidates is None
        assert np.bincount(labels[draw.selected], minlength=3).tolist() == [4, 0, 2]


def _random_query(pools, labels, budget, fnr, seed=0):
    return strategies.STRATEGIES["RANDOM"].query(None, types.SimpleNamespace(labels=labels), _config("RANDOM",
                                                 budget=budget), fnr, pools, np.arange(len(labels)),
                                                 np.random.default_rng(seed))


def test_random_draws_s_distinct_ids_from_the_pools_blind_to_class_and_fnr():
    labels = np.repeat(np.arange(3), [210, 610, 1210])  # pools of 200, 600 and 1200 once X0's first ten go
    pools = {c: np.flatnonzero(labels == c)[10:] for c in range(3)}
    fnr = [1.0, 0.0, 0.0]  # ITER would draw every sample from class 0
    draw = _random_query(pools, labels, 200, fnr)
    selected = np.asarray(draw.selected)
    assert len(selected) == 200 and len(set(selected.tolist())) == 200 and not draw.exhausted
    assert np.isin(selected, np.concatenate(list(pools.values()))).all() and (np.diff(selected) > 0).all()
    counts = np.bincount(labels[selected], minlength=3)
    assert draw.requested == counts.tolist()
    expected = np.array([20, 60, 120])  # S by the pools' shares 1:3:6, not by FNR's 1:0:0
    assert np.all(np.abs(counts - expected) <= 0.25 * expected), counts
    iter_draw = strategies.STRATEGIES["ITER"].query(None, types.SimpleNamespace(labels=labels),
                                                    _config("ITER", budget=200), fnr, pools, np.arange(len(labels)),
                                                    np.random.default_rng(0))
    assert np.bincount(labels[iter_draw.selected], minlength=3).tolist() == [200, 0, 0]
    assert _random_query(pools, labels, 200, [0.0, 0.0, 1.0]).selected == draw.selected  # the same rng: FNR unread


@pytest.mark.parametrize("budget, drawn, exhausted", [(15, 15, False), (20, 15, True)])
def test_random_takes_all_that_is_left_when_the_pools_hold_fewer_than_s(budget, drawn, exhausted):
    labels = np.repeat(np.arange(3), 10)
    pools = {0: np.arange(5, 10), 1: np.arange(15, 20), 2: np.arange(25, 30)}  # 15 ids left in all
    draw = _random_query(pools, labels, budget, [0.2, 0.3, 0.5])
    assert len(draw.selected) == drawn and draw.exhausted is exhausted
    if exhausted:
        assert draw.selected == np.concatenate(list(pools.values())).tolist() and draw.requested == [5, 5, 5]
    empty = _random_query({c: np.zeros(0, np.int64) for c in range(3)}, labels, budget, [0.2, 0.3, 0.5])
    assert empty.selected == [] and empty.requested == [0, 0, 0] and empty.exhausted


def test_the_names_moved_here_still_import_from_the_loops_module():
    from tri_al import active_learning, training

    for name in ("STRATEGIES", "Draw", "Strategy", "Iter", "OutOfData", "Entropy", "allocate_by_fnr", "entropy",
                 "select_highest_entropy", "draw_by_class"):
        assert getattr(active_learning, name) is getattr(strategies, name), name
    for name in ("TrainConfig", "sgd", "train", "predict", "evaluate", "class_metrics", "load_weights", "epoch_logs",
                 "EVAL_BATCH", "LOSS"):
        assert getattr(active_learning, name) is getattr(training, name), name
    assert tri_al.allocate_by_fnr is strategies.allocate_by_fnr


def test_the_cli_reads_its_strategy_choices_from_the_registry(capsys):
    from common import cli
    from common.studies import tri_al as tri_al_study

    assert tri_al_study.STRATEGIES is strategies.STRATEGIES
    parser = cli.build_parser()
    names = list(strategies.STRATEGIES)
    assert parser.parse_args(["tri-al", "data", "out", "--strategy", *names]).strategy == names
    with pytest.raises(SystemExit):
        parser.parse_args(["tri-al", "data", "out", "--strategy", "BALD"])
    choices = ", ".join(repr(name) for name in ("supervised", *names))
    assert "'RANDOM'" in choices
    assert capsys.readouterr().err.splitlines()[-1] == \
        f"zoo tri-al: error: argument --strategy: invalid choice: 'BALD' (choose from {choices})"
