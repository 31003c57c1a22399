"""Shared machinery of the zoo, in wings; TensorFlow lives here, never in the model packages.

Data flows one way: readers -> prepared shards -> tf.data -> model -> metrics
-> reports -> CLI. Each wing is a subpackage whose docstring says what it holds
and what it may import (docs/architecture.md draws the whole house):

    nn/        keras-only losses and ops the model packages share
    ct/        CT volumes, shards, tf.data, inference, metrics, synthetic phantoms
    pose/      MPII facts and PCKh, pose data, evaluation, synthetic figures
    slides/    OpenSlide reading, QuPath annotations, triplets, synthetic slides
    train/     precision, distribution, callbacks, fused batch norm, the training loops, cross-validation
    serve/     SavedModel export and the TF Serving client
    studies/   the papers' studies and pictures, and the demo
    cli/       the ``zoo`` command, one module per wing

``registry`` maps model names to builders (generic code never names a model
package); ``errors``, ``atomic`` and ``tables`` are the one place for errors,
atomic writes and result tables. ``metrics`` and ``export`` keep the public
paths of SPEC's API.
"""
