"""Serving: versioned, atomic, warmed-up SavedModels for TF Serving (``export``) and a gRPC client (``client``).

May import: ``common.atomic``, ``common.errors``, ``common.ct`` (the client
reads a slice); never ``train``, ``studies``, ``cli`` or a model package:
what a model serves comes from the registry entry, passed in by the caller.
"""
