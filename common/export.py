"""The stable public path of SavedModel export (SPEC, "Public API"); it lives in ``common.serve.export``."""

from common.serve.export import export_saved_model

__all__ = ["export_saved_model"]
