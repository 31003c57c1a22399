import dataclasses
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

import acnn_pose
from acnn_pose import staged
from common.nn.optimizers import TorchRMSprop


def test_paper_stages_and_learning_rate_drops():
    a, b, c = acnn_pose.STAGES
    assert (a.trains, a.learning_rate, a.epochs, a.drops) == ("heatmaps", 5e-4, 200, (120, 170))
    assert (b.trains, b.learning_rate, b.epochs, b.drops) == ("masks", 2.5e-4, 200, (120, 170))
    assert (c.trains, c.learning_rate, c.epochs, c.drops) == ("all", 2.5e-4, 100, (50, 70))
    assert [a.learning_rate_at(e) for e in (0, 119, 120, 169, 170, 199)] == pytest.approx(
        [5e-4, 5e-4, 5e-5, 5e-5, 5e-6, 5e-6])


def test_one_factor_shortens_every_stage():
    short = acnn_pose.scaled_stages(0.1)
    assert [(s.name, s.epochs, s.drops) for s in short] == [("A", 20, (12, 17)), ("B", 20, (12, 17)), ("C", 10, (5, 7))]
    assert acnn_pose.scaled_stages(1.0) == list(acnn_pose.STAGES)
    assert [s.name for s in acnn_pose.scaled_stages(0.5, attention=False)] == ["A", "C"]
    tiny = acnn_pose.scaled_stages(0.001)
    assert [s.epochs for s in tiny] == [1, 1, 1] and all(not s.drops for s in tiny)
    with pytest.raises(ValueError, match="factor"):
        acnn_pose.scaled_stages(0)


def _dataset():
    rng = np.random.default_rng(0)
    x = rng.random((4, 64, 64, 3), dtype=np.float32)
    y = np.zeros((4, 16, 16, 16), np.float32)
    y[:, 8, 8, :] = 1.0
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(2), x


def _snapshot(model):
    """Every variable (BN statistics included) of the mask heads and of the heatmap path."""
    masks = {v.path: v.numpy().copy() for layer in model.layers if staged.is_mask_layer(layer) for v in layer.weights}
    path = {v.path: v.numpy().copy() for layer in model.layers
            if not staged.is_mask_layer(layer) and not isinstance(layer, acnn_pose.AttentionMaskGate)
            for v in layer.weights}
    return masks, path


def _changed(before, after):
    return sorted(name for name in before if not np.array_equal(before[name], after[name]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny ACNN through stages A, B, C of one epoch (2 steps), with snapshots between stages."""
    keras.utils.set_random_seed(0)
    model = acnn_pose.build_model(input_shape=(64, 64, 3), num_stacks=2, base_filters=16)
    dataset, x = _dataset()
    out = tmp_path_factory.mktemp("staged")
    stages = acnn_pose.scaled_stages(0.001)
    snapshots, masks, optimizers = [_snapshot(model)], {}, []
    recorder = keras.callbacks.LambdaCallback(on_train_begin=lambda logs: optimizers.append(recorder.model.optimizer))
    for stage in stages:
        acnn_pose.train_staged(model, dataset, out, [stage], steps_per_epoch=2, verbose=0, run_eagerly=True,
                               callbacks=[recorder])
        snapshots.append(_snapshot(model))
        masks[stage.name] = np.asarray(model(x, training=False)[2])
    return model, out, stages, snapshots, masks, optimizers


def test_stage_a_forces_masks_to_one_and_freezes_the_mask_heads(trained):
    _, _, _, snapshots, masks, _ = trained
    assert np.all(masks["A"] == 1.0)  # exactly one, every pixel
    assert _changed(snapshots[0][0], snapshots[1][0]) == []
    assert len(_changed(snapshots[0][1], snapshots[1][1])) > 0.5 * len(snapshots[0][1])


def test_stage_b_freezes_the_heatmap_path_and_trains_the_masks(trained):
    _, _, _, snapshots, masks, _ = trained
    assert _changed(snapshots[1][1], snapshots[2][1]) == []  # BN statistics included
    assert len(_changed(snapshots[1][0], snapshots[2][0])) > 0
    assert masks["B"].max() < 1.0  # the masks are live again


def test_stage_c_trains_both(trained):
    _, _, _, snapshots, _, _ = trained
    assert len(_changed(snapshots[2][0], snapshots[3][0])) > 0
    assert len(_changed(snapshots[2][1], snapshots[3][1])) > 0


def test_rerun_resumes_from_the_finished_stages(trained, caplog):
    model, out, stages, _, _, _ = trained
    assert sorted(p.name for p in out.glob("stage_*.weights.h5")) == [f"stage_{s}.weights.h5" for s in "ABC"]
    fresh = acnn_pose.build_model(input_shape=(64, 64, 3), num_stacks=2, base_filters=16)
    caplog.set_level(logging.INFO, logger="acnn_pose")
    acnn_pose.train_staged(fresh, None, out, stages, steps_per_epoch=2)  # nothing left to fit
    assert caplog.messages == [f"stage {s}: already trained, loading {out / f'stage_{s}.weights.h5'}" for s in "ABC"]
    for a, b in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_every_stage_uses_torch7_rmsprop(trained):
    optimizers = trained[-1]
    assert [type(o) for o in optimizers] == [TorchRMSprop] * 3  # eps outside the root, as optim.rmsprop
    assert [(o.rho, o.epsilon, o.get_config()["weight_decay"]) for o in optimizers] == [(0.99, 1e-8, 0.0)] * 3


def test_configure_stage_rejects_an_unknown_task():
    model = acnn_pose.build_model(input_shape=(64, 64, 3), num_stacks=2, base_filters=16)
    with pytest.raises(ValueError, match="trains"):
        acnn_pose.configure_stage(model, dataclasses.replace(acnn_pose.STAGES[0], trains="everything"))


def test_stacked_mse_sums_the_stages():
    y_true = np.zeros((1, 2, 2, 1), np.float32)
    y_pred = np.stack([np.full((1, 2, 2, 1), 1.0), np.full((1, 2, 2, 1), 2.0)], axis=1).astype(np.float32)
    assert float(staged.stacked_mse(y_true, y_pred)[0]) == pytest.approx(1.0 + 4.0)


def test_stage_b_masks_learn_what_equation_4_asks(tmp_path):
    """With H_2 = 0 and targets P_1, eq. 4 gives P_2 = P_1 (1 - M_1): the loss is |M_1 P_1|^2, so M_1 must fall.

    The heatmap path is frozen in stage B, so only the masks can lower the loss; they reach it through
    eq. 4's ``P_1 * (1 - M_1)`` and the gate of eq. 1 (here without effect: H_2 is zero whatever it sees).
    """
    keras.utils.set_random_seed(0)
    model = acnn_pose.build_model(input_shape=(64, 64, 3), num_stacks=2, base_filters=16)
    rng = np.random.default_rng(0)
    heatmap_1, heatmap_2 = model.get_layer("heatmap_1"), model.get_layer("heatmap_2")
    heatmap_1.kernel.assign(rng.normal(0, 0.3, heatmap_1.kernel.shape).astype("float32"))
    for weight in heatmap_2.weights:
        weight.assign(np.zeros(weight.shape, "float32"))
    x = rng.random((4, 64, 64, 3), dtype=np.float32)
    y = np.asarray(model(x, training=False)[0])  # P_1: the stage-1 prediction is the target
    trainer = staged.training_model(model)

    def loss():
        return float(np.mean(staged.stacked_mse(y, trainer([x], training=False))))

    stage_b = acnn_pose.Stage("B", "masks", 1e-2, 1, ())
    staged.configure_stage(model, stage_b)
    before, mask_before = loss(), float(np.asarray(model(x, training=False)[2]).mean())
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(4)
    acnn_pose.train_staged(model, dataset, tmp_path, [stage_b], steps_per_epoch=15, verbose=0, run_eagerly=True)
    after, mask_after = loss(), float(np.asarray(model(x, training=False)[2]).mean())
    assert before > 1e-3 and after < 0.25 * before, (before, after)
    assert mask_after < mask_before - 0.3, (mask_before, mask_after)
