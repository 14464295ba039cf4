from __future__ import annotations

import numpy as np
import pytest

from surrogate_search.metrics import box_iou, get_metric


def raster_iou(a: np.ndarray, b: np.ndarray, size: int = 24) -> float:
    """Independent reference: count unit cells covered by integer boxes."""
    grid = np.zeros((2, size, size), dtype=bool)
    for k, (x1, y1, x2, y2) in enumerate((a, b)):
        grid[k, int(y1):int(y2), int(x1):int(x2)] = True
    union = np.logical_or(*grid).sum()
    return float(np.logical_and(*grid).sum() / union) if union else float(np.array_equal(a, b))


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    corners = rng.integers(0, 20, size=(n, 2, 2))
    lo, hi = corners.min(axis=1), corners.max(axis=1)
    return np.concatenate([lo, hi], axis=1)  # x1, y1, x2, y2 with possible zero width


@pytest.mark.parametrize("seed", range(3))
def test_iou_matches_rasterised_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    preds, targets = random_boxes(rng, 300), random_boxes(rng, 300)
    preds[:5] = targets[:5]  # identical boxes, some possibly empty
    expected = np.array([raster_iou(p, t) for p, t in zip(preds, targets)])
    np.testing.assert_allclose(box_iou(preds, targets), expected)
    assert get_metric("iou").compute(preds, targets) == pytest.approx(expected.mean())


def test_iou_known_values() -> None:
    assert box_iou([[0, 0, 2, 2]], [[1, 1, 3, 3]])[0] == pytest.approx(1 / 7)
    assert box_iou([[0, 0, 1, 1]], [[2, 2, 3, 3]])[0] == 0.0


def test_iou_rejects_inverted_boxes_naming_them() -> None:
    with pytest.raises(ValueError, match=r"prediction box 1 has x2 < x1 or y2 < y1: \[5.0, 0.0, 1.0, 1.0\]"):
        box_iou([[0, 0, 1, 1], [5, 0, 1, 1]], [[0, 0, 1, 1], [0, 0, 1, 1]])
