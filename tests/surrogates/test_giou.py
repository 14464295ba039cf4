"""GIoU loss: values and gradients on boxes checked by hand, IoU against the metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from surrogate_search.metrics import box_iou
from surrogate_search.surrogates.giou import generalized_iou


def giou_loss(prediction: list[float], target: list[float]) -> tuple[float, list[float]]:
    p = torch.tensor([prediction], dtype=torch.float64, requires_grad=True)
    giou, _ = generalized_iou(p, torch.tensor([target], dtype=torch.float64))
    loss = (1 - giou).sum()
    loss.backward()
    return float(loss.detach()), p.grad[0].tolist()


def test_values_on_hand_checked_boxes() -> None:
    # identical: IoU 1, nothing of the hull uncovered
    assert giou_loss([0, 0, 2, 2], [0, 0, 2, 2])[0] == pytest.approx(0.0, abs=1e-6)
    # overlap 1 of union 7, hull 3 x 3 = 9: GIoU = 1/7 - 2/9
    assert giou_loss([0, 0, 2, 2], [1, 1, 3, 3])[0] == pytest.approx(1 - (1 / 7 - 2 / 9))
    # disjoint unit boxes 1 apart: IoU 0, hull 3, union 2: GIoU = -1/3
    assert giou_loss([0, 0, 1, 1], [2, 0, 3, 1])[0] == pytest.approx(4 / 3)
    # nested: GIoU is the IoU (the hull is the outer box)
    assert giou_loss([1, 1, 2, 2], [0, 0, 4, 4])[0] == pytest.approx(1 - 1 / 16)


def test_disjoint_boxes_still_get_a_gradient_towards_each_other() -> None:
    # loss = 2 - union / hull, union = 1 + (x2 - x1), hull = 3 - x1 (x2 stays inside the hull):
    # d/dx2 = -1/3 (grow towards the target); d/dx1 = -(-1 * 3 - 2 * -1) / 9 = +1/9 (the left edge
    # moving right shrinks the union faster, relatively, than the hull)
    _, grad = giou_loss([0, 0, 1, 1], [2, 0, 3, 1])
    assert grad[2] == pytest.approx(-1 / 3)
    assert grad[0] == pytest.approx(1 / 9)


def test_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        corners = rng.uniform(0, 10, size=(2, 2, 2))
        pred = np.concatenate([corners[0].min(0), corners[0].max(0)]).tolist()
        target = np.concatenate([corners[1].min(0), corners[1].max(0)]).tolist()
        _, grad = giou_loss(pred, target)
        for j in range(4):
            bump = np.zeros(4)
            bump[j] = 1e-6
            up = giou_loss((np.array(pred) + bump).tolist(), target)[0]
            down = giou_loss((np.array(pred) - bump).tolist(), target)[0]
            assert grad[j] == pytest.approx((up - down) / 2e-6, abs=1e-5)


def test_iou_part_matches_the_metric() -> None:
    rng = np.random.default_rng(1)
    a, b = (np.sort(rng.uniform(0, 20, size=(200, 2, 2)), axis=1) for _ in range(2))
    boxes_a = np.concatenate([a[:, 0], a[:, 1]], axis=1)
    boxes_b = np.concatenate([b[:, 0], b[:, 1]], axis=1)
    giou, iou = generalized_iou(torch.from_numpy(boxes_a), torch.from_numpy(boxes_b))
    np.testing.assert_allclose(iou.numpy(), box_iou(boxes_a, boxes_b), atol=1e-5)
    assert (giou <= iou + 1e-6).all() and (giou > -1).all()
