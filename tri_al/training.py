"""Training and scoring one TRI-CNN, as every round of TRI-AL's loop and every baseline does (paper III).

``train`` fits a model on some sample ids of a triplet source
(``tri_al.sources``) from a fresh SGD state, the original code's optimizer in
Keras 3 (``sgd``, ``TrainConfig``), one ``fit`` call per epoch with its own
seeded shuffle, early stopping on the validation loss and the best epoch's
weights kept. ``predict``, ``evaluate`` and ``class_metrics`` score it: per
class F1 and FNR (the FNR drives ITER's and OOD's draws, Algorithm 1 line 8),
micro and macro F1 (Table II). ``epoch_logs`` and ``fresh_logs`` make the
callbacks that log a training's epochs into a folder of its own.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import warnings

import keras
import numpy as np

from common import atomic  # stdlib only: this module stays keras-only
from common.nn.callbacks import EpochHistory, StopOnNonFiniteLoss
from common.nn.optimizers import build_compiled
from tri_al.sources import as_source

EVAL_BATCH = 64  # validation, scoring and test batches
LOSS = "sparse_categorical_crossentropy"


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
    """TRI-CNN's training recipe, the recipe of paper 004 section III (TRI-AL): every round and baseline trains by it.

    Paper III: SGD, lr 1.5e-4, cross-entropy, early stopping with patience 5.
    The original TRI-CNN code, whose hyperparameters the paper reuses: Keras 2's
    ``SGD(decay=1e-6, momentum=0.9, nesterov=True)`` and ``batch_size = 128``.
    ``train`` runs it; a ``model.fit`` of one's own follows it with ``sgd(config)``, ``LOSS``, ``batch_size``
    and early stopping on the validation loss (``patience``, the best epoch's weights restored).
    Not ``common.train.segmentation.TrainConfig``, whose rate decays per epoch (``lr_decay``) where this one
    follows Keras 2's per-step ``decay``, and whose epochs run to the end; both validate alike (``validate``).

    Example:

    >>> import tri_al
    >>> recipe = tri_al.TrainConfig()
    >>> model = tri_al.build_model(tile_size=32, base_filters=2, head_units=8)
    >>> model.compile(optimizer=sgd(recipe), loss=LOSS)
    >>> stop = keras.callbacks.EarlyStopping(patience=recipe.patience, restore_best_weights=True)
    >>> recipe.learning_rate, recipe.batch_size, recipe.epochs  # model.fit(..., batch_size=, epochs=, callbacks=[stop])
    (0.00015, 128, 100)
    """

    learning_rate: float = 1.5e-4
    momentum: float = 0.9
    nesterov: bool = True
    decay: float = 1e-6  # Keras 2's per-step decay: lr_t = lr / (1 + decay * t)
    batch_size: int = 128
    epochs: int = 100  # at most: early stopping ends a round first
    patience: int = 5
    verbose: int = 0
    stain_augment: float = 0.0  # HED jitter sigma of training batches (not the paper's; 0: off)

    def __post_init__(self):
        self.validate()  # frozen: valid once, valid for good

    def validate(self) -> None:
        """Raises ValueError naming the first bad field (as ``common.train.recipe.Recipe.validate``)."""
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if not self.decay >= 0:
            raise ValueError(f"decay must be >= 0, got {self.decay}")
        if not 0 <= self.stain_augment < 1:
            raise ValueError(f"stain_augment (HED jitter sigma) must lie in [0, 1), got {self.stain_augment}")
        for field in ("batch_size", "epochs", "patience"):
            if not getattr(self, field) >= 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")


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


def _compiled_for(model, config: TrainConfig) -> bool:
    """Whether ``model`` is compiled as ``train`` compiles it for ``config``, read from the model itself (its
    optimizer's settings and its loss), so no record kept beside it can go stale."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or getattr(model, "loss", None) != LOSS:
        return False
    settings = [{k: v for k, v in o.get_config().items() if k != "name"} for o in (optimizer, sgd(config))]
    return settings[0] == settings[1]


def _fresh_optimizer(model, config: TrainConfig) -> None:
    """Compiles once per model and optimizer settings; later rounds zero the optimizer's state (momenta, and
    the step count that ``decay`` follows) instead of compiling again, which retraces the training step."""
    if _compiled_for(model, config):
        for variable in model.optimizer.variables:
            if not variable.path.endswith("learning_rate"):
                variable.assign(np.zeros(variable.shape, variable.dtype))
        return
    model.compile(optimizer=sgd(config), loss=LOSS, metrics=["accuracy"])
    build_compiled(model)


def _reseed_dropout(model, seed: int) -> None:
    """Dropout masks from (seed, layer), not from whatever ran in this process before."""
    for index, layer in enumerate(model.layers):
        generator = getattr(layer, "seed_generator", None)
        if generator is not None:
            generator.state.assign(np.array([seed, index], generator.state.dtype))


def epoch_logs(folder) -> list[keras.callbacks.Callback]:
    """TensorBoard's events and ``history.csv`` (a row per epoch) of one training in ``folder``, as ``zoo train``.

    The default ``log_callbacks`` of the loops (``tri_al.active_learning``).
    ``common.train.callbacks.logging_callbacks`` writes the same files and makes a failed TensorBoard write one
    ``WriteError`` line; this package may not import it, so a study passes it in. ``EpochHistory``, not
    ``CSVLogger``: ``train`` fits one epoch per call, and CSVLogger truncated the file each call (appending, it
    doubled the epochs of a retried round), writing in place.
    """
    folder = pathlib.Path(folder)
    made = [EpochHistory(folder / "history.csv", atomic.atomic_path),
            keras.callbacks.TensorBoard(str(folder), write_graph=False)]
    for callback in made:
        callback.async_safe = True  # both write once per epoch (common.train.callbacks says why it matters)
    return made


def fresh_logs(folder, log_callbacks) -> list[keras.callbacks.Callback]:
    """``log_callbacks(folder)`` once what an interrupted try left there is gone: the retry starts again at epoch 0,
    and TensorBoard would draw both tries as one. ``log_callbacks`` None: no logs, nothing removed."""
    if log_callbacks is None:
        return []
    folder = pathlib.Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    return list(log_callbacks(folder))


def train(model, data, train_ids, val_ids, config: TrainConfig, seed: int, run: str = "TRI-AL",
          callbacks=()) -> list[float]:
    """Fits ``model`` on ``train_ids`` from a fresh SGD state, early stopping on the ``val_ids`` loss.

    Epochs are shuffled by a generator seeded with ``seed`` and run one ``fit``
    call each, so a round is the same computation in any process (Keras'
    own shuffling draws from TensorFlow's op-level seeds, which depend on
    what ran before). Batches stream from ``data`` in that order; with
    ``config.stain_augment`` the training batches (not the validation ones)
    get a HED stain jitter seeded by (``seed``, epoch). Returns the validation
    loss per epoch; the weights of the best epoch are kept (paper III: patience
    5). A NaN or infinite training loss raises ``NonFiniteLoss`` naming ``run``,
    the epoch and the step. ``callbacks`` (e.g. ``epoch_logs``) see every epoch,
    its validation loss and accuracy included.
    """
    source = as_source(data)
    _fresh_optimizer(model, config)
    _reseed_dropout(model, seed)
    rng = np.random.default_rng(seed)
    val = source.batches(np.asarray(val_ids, np.int64), EVAL_BATCH)
    losses, best, wait, every_epoch = [], None, 0, [StopOnNonFiniteLoss(run), *callbacks]
    for epoch in range(config.epochs):
        order = rng.permutation(np.asarray(train_ids, np.int64))
        jitter_seed = int(np.random.default_rng([seed, 3, epoch]).integers(2**31)) if config.stain_augment else 0
        fitted = model.fit(source.batches(order, config.batch_size, config.stain_augment, jitter_seed),
                           validation_data=val, initial_epoch=epoch, epochs=epoch + 1, shuffle=False,
                           verbose=config.verbose, callbacks=every_epoch)
        losses.append(float(fitted.history["val_loss"][-1]))
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
