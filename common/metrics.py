"""The stable public path of the zoo's metrics (SPEC, "Public API").

``segmentation_metrics`` lives in ``common.ct.metrics`` and ``pckh`` in
``common.pose.mpii``; user scripts may keep importing both from here.
"""

from common.ct.metrics import METRIC_NAMES, segmentation_metrics
from common.pose.mpii import pckh

__all__ = ["METRIC_NAMES", "pckh", "segmentation_metrics"]
