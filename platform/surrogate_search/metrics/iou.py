"""Intersection over union of axis-aligned boxes (detection)."""

from __future__ import annotations

from typing import Any

import numpy as np

from surrogate_search.metrics.base import Metric, check_same_length, register_metric


def box_iou(predictions: Any, targets: Any) -> np.ndarray:
    """IoU of each predicted box with its target box; boxes are rows ``(x1, y1, x2, y2)``.

    A box with x2 < x1 or y2 < y1 raises. Two empty (zero-area) boxes score 1 when identical and
    0 otherwise, so the value is always defined.
    """
    p = np.asarray(predictions, dtype=np.float64).reshape(-1, 4)
    t = np.asarray(targets, dtype=np.float64).reshape(-1, 4)
    check_same_length(p, t, "iou")
    for name, boxes in (("prediction", p), ("target", t)):
        bad = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
        if bad.size:
            raise ValueError(f"iou: {name} box {bad[0]} has x2 < x1 or y2 < y1: {boxes[bad[0]].tolist()}")
    iw = np.clip(np.minimum(p[:, 2], t[:, 2]) - np.maximum(p[:, 0], t[:, 0]), 0, None)
    ih = np.clip(np.minimum(p[:, 3], t[:, 3]) - np.maximum(p[:, 1], t[:, 1]), 0, None)
    inter = iw * ih
    area_p = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])
    area_t = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
    union = area_p + area_t - inter
    identical = np.all(p == t, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), identical.astype(np.float64))


@register_metric("iou")
class IoU(Metric):
    """Per sample: IoU of the predicted box with the target box. Over a split: the mean."""

    name = "iou"
    higher_is_better = True

    def per_sample(self, predictions: Any, targets: Any) -> np.ndarray:
        return box_iou(predictions, targets)

    def compute(self, predictions: Any, targets: Any) -> float:
        values = box_iou(predictions, targets)
        return float(values.mean()) if len(values) else 0.0


class IoUAtLeast(Metric):
    """Per sample: 1 if the predicted box overlaps its target with IoU >= ``threshold``, else 0.
    Over a split: the share of such boxes (a detection counts as correct at IoU 0.5 in PASCAL VOC)."""

    higher_is_better = True
    threshold: float

    def per_sample(self, predictions: Any, targets: Any) -> np.ndarray:
        return (box_iou(predictions, targets) >= self.threshold).astype(np.float64)

    def compute(self, predictions: Any, targets: Any) -> float:
        values = self.per_sample(predictions, targets)
        return float(values.mean()) if len(values) else 0.0


@register_metric("iou_ge_50")
class IoUAtLeast50(IoUAtLeast):
    """Share of boxes with IoU >= 0.5."""

    name = "iou_ge_50"
    threshold = 0.5


@register_metric("iou_ge_75")
class IoUAtLeast75(IoUAtLeast):
    """Share of boxes with IoU >= 0.75."""

    name = "iou_ge_75"
    threshold = 0.75
