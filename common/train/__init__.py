"""Training: precision and distribution, callbacks and resume, fused batch norm, the training loops, cross-validation.

``recipe`` is keras-only (no TensorFlow, so ``benchmarks gpu-check`` runs it on
a GPU machine without one): precision and every compile setting of a
segmentation model, which ``segmentation`` and ``crossval`` compile through.
``segmentation`` is ``zoo train`` (a registry model on CT shards), ``pose``
is ``zoo train-pose`` (the registry entry's own stages), ``crossval`` is the
papers' K-fold protocol. May import: ``common.registry`` and the data wings
(``ct``, ``pose``, ``nn``), ``common.errors``, ``common.atomic``,
``common.tables``; never ``serve``, ``studies`` or ``cli``; models only
through the registry.
"""
