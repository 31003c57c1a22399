"""Serving: versioned, atomic, warmed-up SavedModels for TF Serving (``export``), their model cards and
``zoo export --verify`` (``card``) with the ops it lets run (``allowlist``), the whole inference as one
SavedModel (``pipeline``), and a gRPC client (``client``).

May import: ``common.atomic``, ``common.errors``, ``common.ct`` (the client
reads a slice; the card, the training spacing), ``common.pose.mpii`` and
``common.slides.annotations`` (the card's joint and tissue names); never
``train``, ``studies``, ``cli`` or a model package: what a model serves
comes from the registry entry, passed in by the caller.
"""
