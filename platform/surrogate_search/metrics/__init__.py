"""Non-differentiable metrics and their registry.

Add your own::

    from surrogate_search.metrics import Metric, register_metric

    @register_metric("top1_error")
    class Top1Error(Metric):
        name = "top1_error"
        higher_is_better = False
        def compute(self, predictions, targets):
            return float((np.asarray(predictions) != np.asarray(targets)).mean())
"""

from surrogate_search.metrics import classification, edit_distance, iou, retrieval, rotated_iou  # noqa: F401  (registers)
from surrogate_search.metrics.base import METRICS, Metric, NotDecomposableError, get_metric, list_metrics, register_metric
from surrogate_search.metrics.classification import ConfusionMatrixMetric, confusion_counts
from surrogate_search.metrics.edit_distance import edit_distances
from surrogate_search.metrics.iou import box_iou
from surrogate_search.metrics.retrieval import RecallAtK, retrieval_hits
from surrogate_search.metrics.rotated_iou import rotated_box_iou

__all__ = [
    "METRICS",
    "ConfusionMatrixMetric",
    "Metric",
    "NotDecomposableError",
    "RecallAtK",
    "box_iou",
    "confusion_counts",
    "edit_distances",
    "get_metric",
    "list_metrics",
    "register_metric",
    "retrieval_hits",
    "rotated_box_iou",
]
