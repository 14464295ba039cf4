"""Intersection over union of rotated rectangles (oriented text and object boxes).

A box is ``(cx, cy, w, h, theta)``: centre, side lengths and the angle of the ``w`` side from the
x axis in radians, lengths in any common unit. The overlap of two rectangles is a convex polygon
whose corners are the corners of each rectangle that lie inside the other and the points where
their edges cross; sorted by angle round their mean they give its area by the shoelace formula.
Written once in torch, so that the metric (float64, no gradient) and the rotated IoU loss
(differentiable through the corners and crossings) are the same computation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from surrogate_search.metrics.base import Metric, check_same_length, register_metric


def box_corners(boxes: torch.Tensor) -> torch.Tensor:
    """``(N, 5)`` boxes -> ``(N, 4, 2)`` corners, in order round the rectangle."""
    cx, cy, w, h, theta = boxes.unbind(-1)
    cos, sin = torch.cos(theta), torch.sin(theta)
    along = torch.stack([cos, sin], dim=-1) * (w / 2).unsqueeze(-1)
    across = torch.stack([-sin, cos], dim=-1) * (h / 2).unsqueeze(-1)
    centre = torch.stack([cx, cy], dim=-1)
    return torch.stack([centre + along + across, centre - along + across, centre - along - across,
                        centre + along - across], dim=1)


def _inside(points: torch.Tensor, boxes: torch.Tensor, tolerance: torch.Tensor) -> torch.Tensor:
    """Whether each of ``points`` ``(N, P, 2)`` lies in its box (edges included, within ``tolerance``)."""
    offset = points - boxes[:, None, :2]
    cos, sin = torch.cos(boxes[:, 4:5]), torch.sin(boxes[:, 4:5])
    along = offset[..., 0] * cos + offset[..., 1] * sin
    across = -offset[..., 0] * sin + offset[..., 1] * cos
    return (along.abs() <= boxes[:, 2:3] / 2 + tolerance) & (across.abs() <= boxes[:, 3:4] / 2 + tolerance)


def _crossings(a: torch.Tensor, b: torch.Tensor, slack: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each edge of ``a`` ``(N, 4, 2)`` crosses each edge of ``b``: ``(N, 16, 2)`` points and
    whether they exist (parallel edges never cross; their shared stretch ends at corners)."""
    start_a, edge_a = a[:, :, None], (a.roll(-1, dims=1) - a)[:, :, None]
    start_b, edge_b = b[:, None], (b.roll(-1, dims=1) - b)[:, None]

    def cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]

    denominator = cross(edge_a, edge_b)
    parallel = denominator.abs() <= 1e-9 * (edge_a.norm(dim=-1) * edge_b.norm(dim=-1)).clamp_min(1e-30)
    safe = torch.where(parallel, torch.ones_like(denominator), denominator)  # no 0/0 in the gradient
    gap = start_b - start_a
    t, u = cross(gap, edge_b) / safe, cross(gap, edge_a) / safe
    valid = ~parallel & (t >= -slack) & (t <= 1 + slack) & (u >= -slack) & (u <= 1 + slack)
    points = start_a + t.unsqueeze(-1) * edge_a
    return points.flatten(1, 2), valid.flatten(1)


def intersection_area(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Area of the overlap of each box of ``a`` ``(N, 5)`` with the box of ``b`` in the same row."""
    # Both moved so that b is centred on the origin: near-identical boxes then differ by what
    # differs, not by rounding errors of their common position (which swamp a thin box's width).
    shift = torch.cat([b[:, :2], torch.zeros_like(b[:, 2:])], dim=1)
    a, b = a - shift, b - shift
    corners_a, corners_b = box_corners(a), box_corners(b)
    scale = torch.maximum(a[:, 2:4].abs().amax(1), b[:, 2:4].abs().amax(1))
    # Corners on the other box's edge (identical or touching boxes) count as inside despite rounding.
    slack = 64 * torch.finfo(a.dtype).eps
    tolerance = slack * scale.clamp_min(1e-12)
    crossings, crossing_ok = _crossings(corners_a, corners_b, slack)
    points = torch.cat([corners_a, corners_b, crossings], dim=1)  # (N, 24, 2)
    valid = torch.cat([_inside(corners_a, b, tolerance[:, None]), _inside(corners_b, a, tolerance[:, None]),
                       crossing_ok], dim=1)
    weights = valid.to(points.dtype)
    mean = (points * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1)
    with torch.no_grad():  # the order is chosen, not differentiated
        offset = points - mean[:, None]
        angle = torch.atan2(offset[..., 1], offset[..., 0]).masked_fill(~valid, 10.0)  # the invalid ones last
        order = angle.argsort(dim=1)
    ordered = points.gather(1, order[..., None].expand_as(points))
    kept = valid.gather(1, order)
    # Points that are not corners of the overlap repeat its first corner: they add no area. Taken
    # from their mean, the products stay of the overlap's size, not the coordinates' (thin boxes).
    ordered = torch.where(kept[..., None], ordered, ordered[:, :1]) - mean[:, None]
    following = ordered.roll(-1, dims=1)
    twice = (ordered[..., 0] * following[..., 1] - ordered[..., 1] * following[..., 0]).sum(1)
    return twice.abs() / 2


def rotated_iou(predictions: torch.Tensor, targets: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """IoU of each predicted rotated box with its target, differentiable in ``predictions`` (where
    they overlap; rows ``(cx, cy, w, h, theta)``). ``eps`` keeps the division defined."""
    targets = targets.to(predictions.dtype)
    inter = intersection_area(predictions, targets)
    union = predictions[:, 2] * predictions[:, 3] + targets[:, 2] * targets[:, 3] - inter
    return inter / (union + eps)


def rotated_box_iou(predictions: Any, targets: Any) -> np.ndarray:
    """IoU of each predicted rotated box with its target box (rows ``(cx, cy, w, h, theta)``), in float64.

    A box with a negative side raises. Two empty (zero-area) boxes score 1 when identical and 0
    otherwise, so the value is always defined; a box whose sides differ by more than ~1e12 times is
    below float64's resolution. ``rotated_box_iou([[0, 0, 4, 2, 0]], [[0, 0, 2, 4,
    np.pi / 2]])`` is ``[1.0]`` (up to rounding): the same rectangle.
    """
    p = np.asarray(predictions, dtype=np.float64).reshape(-1, 5)
    t = np.asarray(targets, dtype=np.float64).reshape(-1, 5)
    check_same_length(p, t, "rotated_iou")
    for name, boxes in (("prediction", p), ("target", t)):
        bad = np.flatnonzero((boxes[:, 2] < 0) | (boxes[:, 3] < 0))
        if bad.size:
            raise ValueError(f"rotated_iou: {name} box {bad[0]} has a negative side: {boxes[bad[0]].tolist()}")
    with torch.no_grad():
        inter = intersection_area(torch.from_numpy(p), torch.from_numpy(t)).numpy()
    union = p[:, 2] * p[:, 3] + t[:, 2] * t[:, 3] - inter
    identical = np.all(p == t, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, np.clip(inter / np.where(union > 0, union, 1.0), 0.0, 1.0),
                        identical.astype(np.float64))


@register_metric("rotated_iou")
class RotatedIoU(Metric):
    """Per sample: IoU of the predicted rotated box with the target box. Over a split: the mean."""

    name = "rotated_iou"
    higher_is_better = True

    def per_sample(self, predictions: Any, targets: Any) -> np.ndarray:
        return rotated_box_iou(predictions, targets)

    def compute(self, predictions: Any, targets: Any) -> float:
        values = rotated_box_iou(predictions, targets)
        return float(values.mean()) if len(values) else 0.0


class RotatedIoUAtLeast(Metric):
    """Per sample: 1 if the predicted rotated box overlaps its target with IoU >= ``threshold``.
    Over a split: the share of such boxes (ICDAR 2015 counts a text box as found at IoU 0.5)."""

    higher_is_better = True
    threshold: float

    def per_sample(self, predictions: Any, targets: Any) -> np.ndarray:
        return (rotated_box_iou(predictions, targets) >= self.threshold).astype(np.float64)

    def compute(self, predictions: Any, targets: Any) -> float:
        values = self.per_sample(predictions, targets)
        return float(values.mean()) if len(values) else 0.0


@register_metric("rotated_iou_ge_50")
class RotatedIoUAtLeast50(RotatedIoUAtLeast):
    """Share of rotated boxes with IoU >= 0.5."""

    name = "rotated_iou_ge_50"
    threshold = 0.5


@register_metric("rotated_iou_ge_75")
class RotatedIoUAtLeast75(RotatedIoUAtLeast):
    """Share of rotated boxes with IoU >= 0.75."""

    name = "rotated_iou_ge_75"
    threshold = 0.75
