"""Rotated IoU: hand-checked rectangles and an independent reference that counts grid points."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from surrogate_search.metrics import get_metric, rotated_box_iou
from surrogate_search.metrics.rotated_iou import rotated_iou


def grid_iou(a: np.ndarray, b: np.ndarray, points: int = 400) -> float:
    """Independent reference: the share of a fine grid's points in both boxes among those in either."""
    reach = max(a[2] + a[3], b[2] + b[3])
    xs = np.linspace(min(a[0], b[0]) - reach, max(a[0], b[0]) + reach, points)
    ys = np.linspace(min(a[1], b[1]) - reach, max(a[1], b[1]) + reach, points)
    x, y = np.meshgrid(xs, ys)

    def inside(box: np.ndarray) -> np.ndarray:
        dx, dy, cos, sin = x - box[0], y - box[1], math.cos(box[4]), math.sin(box[4])
        return (np.abs(dx * cos + dy * sin) <= box[2] / 2) & (np.abs(-dx * sin + dy * cos) <= box[3] / 2)

    in_a, in_b = inside(a), inside(b)
    return float((in_a & in_b).sum() / (in_a | in_b).sum())


@pytest.mark.parametrize("seed", range(2))
def test_rotated_iou_matches_a_grid_count(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 60
    targets = np.column_stack([rng.uniform(0, 10, (n, 2)), rng.uniform(1, 8, (n, 2)), rng.uniform(-4, 4, n)])
    moved = targets + np.column_stack([rng.normal(0, 2, (n, 2)), rng.normal(0, 1, (n, 2)), rng.normal(0, 0.7, n)])
    moved[:, 2:4] = np.abs(moved[:, 2:4]) + 0.3
    expected = np.array([grid_iou(p, t) for p, t in zip(moved, targets)])
    assert (expected > 0.2).mean() > 0.3 and (expected == 0).any()  # overlaps of every degree, and misses
    np.testing.assert_allclose(rotated_box_iou(moved, targets), expected, atol=0.01)
    assert get_metric("rotated_iou").compute(moved, targets) == pytest.approx(expected.mean(), abs=0.005)


def test_rotated_iou_on_hand_checked_rectangles() -> None:
    box = [3.0, 2.0, 4.0, 2.0, 0.3]
    cases = {
        "identical": (box, box, 1.0),
        "disjoint": ([0, 0, 2, 1, 0.5], [10, 10, 2, 1, -0.2], 0.0),
        "a quarter turn with the sides swapped": ([3, 2, 2, 4, 0.3 + math.pi / 2], box, 1.0),
        "half a turn": ([3, 2, 4, 2, 0.3 + math.pi], box, 1.0),
        "contained": ([3, 2, 2, 1, 0.3], box, 2 / 8),
        "a square a quarter turned": ([0, 0, 2, 2, math.pi / 2], [0, 0, 2, 2, 0], 1.0),
        # two unit squares, one turned by 45 degrees about the same centre: an octagon of area
        # 2 (sqrt 2 - 1), union 2 - that
        "an eighth turn": ([0, 0, 1, 1, math.pi / 4], [0, 0, 1, 1, 0], 2 * (2 ** 0.5 - 1) / (2 - 2 * (2 ** 0.5 - 1))),
        "half overlapping, axis-aligned": ([1, 0, 2, 2, 0], [0, 0, 2, 2, 0], 2 / 6),
    }
    predictions, targets, expected = zip(*cases.values())
    got = rotated_box_iou(predictions, targets)
    assert dict(zip(cases, got.round(9).tolist())) == pytest.approx(dict(zip(cases, expected)), abs=1e-9)


def test_empty_boxes_and_negative_sides() -> None:
    assert rotated_box_iou([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0]], [[1, 1, 0, 0, 0], [2, 1, 0, 0, 0]]).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"rotated_iou: target box 1 has a negative side: \[0.0, 0.0, -1.0, 1.0, 0.0\]"):
        rotated_box_iou([[0, 0, 1, 1, 0]] * 2, [[0, 0, 1, 1, 0], [0, 0, -1, 1, 0]])


def test_the_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(3)
    targets = torch.tensor([[5.0, 5.0, 6.0, 2.0, 0.4]] * 8, dtype=torch.float64)
    predictions = targets + torch.from_numpy(rng.normal(0, 0.5, (8, 5)))
    predictions.requires_grad_(True)
    rotated_iou(predictions, targets).sum().backward()
    step = 1e-6
    for j in range(5):
        bump = torch.zeros(8, 5, dtype=torch.float64)
        bump[:, j] = step
        with torch.no_grad():
            slope = (rotated_iou(predictions + bump, targets) - rotated_iou(predictions - bump, targets)) / (2 * step)
        torch.testing.assert_close(predictions.grad[:, j], slope, atol=1e-5, rtol=1e-4)
