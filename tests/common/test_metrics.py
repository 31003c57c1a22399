"""SPEC's public path ``common.metrics``: the CT metrics and PCKh from their homes."""

import common.metrics
from common.ct import metrics as ct_metrics
from common.pose import mpii


def test_the_public_path_is_the_implementations():
    assert common.metrics.segmentation_metrics is ct_metrics.segmentation_metrics
    assert common.metrics.pckh is mpii.pckh
    assert common.metrics.METRIC_NAMES == ("dice", "iou", "voe", "precision", "recall", "hd", "hd95", "assd",
                                           "assd_lits")
