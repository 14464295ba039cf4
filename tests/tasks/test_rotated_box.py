"""``rotated_box``: rendered canvases whose box holds the word tightly, valid predictions, the proxy
loss in pixels, and the surrogate-side hooks (pairs across the angle's wrap and the w/h swap)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from surrogate_search.metrics import rotated_box_iou
from surrogate_search.tasks import Split, get_task
from surrogate_search.tasks.rotated_box import ANGLE_SCALE
from surrogate_search.tasks.rotated_box_render import (CANVAS, canonical_box, render_rotated_image,
                                                       render_rotated_split, split_words)

TINY = {"train_size": 24, "val_size": 8, "test_size": 8}


def test_rendering_is_reproducible_and_the_box_holds_the_word_tightly() -> None:
    images, boxes = render_rotated_split(seed=3, split="train", size=30)
    again, boxes_again = render_rotated_split(seed=3, split="train", size=30)
    np.testing.assert_array_equal(images, again)
    assert boxes == boxes_again and images.shape == (30, CANVAS, CANVAS) and images.dtype == np.uint8
    assert all(w >= h > 0 and -math.pi / 2 <= theta < math.pi / 2 for _, _, w, h, theta in boxes)
    assert np.ptp([b[4] for b in boxes]) > 2.5  # every angle, not a narrow band
    # Without clutter, the ink (well above the noise) lies in the box and reaches each of its sides
    # (within a few pixels: the thin end strokes of some fonts are fainter).
    ys, xs = np.mgrid[0:CANVAS, 0:CANVAS] + 0.5
    for i in range(10):
        image, (cx, cy, w, h, theta) = render_rotated_image(np.random.default_rng(i), "val", clutter=0)
        ink = np.abs(image.astype(float) - np.median(image)) > 80
        along = (xs[ink] - cx) * math.cos(theta) + (ys[ink] - cy) * math.sin(theta)
        across = -(xs[ink] - cx) * math.sin(theta) + (ys[ink] - cy) * math.cos(theta)
        assert np.abs(along).max() <= w / 2 + 0.5 and np.abs(across).max() <= h / 2 + 0.5
        assert np.ptp(along) >= w - 5 and np.ptp(across) >= h - 3


def test_each_split_has_its_own_words() -> None:
    words = {split: set(found) for split, found in split_words().items()}
    assert min(len(found) for found in words.values()) > 100
    assert not (words["train"] & words["val"] or words["train"] & words["test"] or words["val"] & words["test"])


def test_canonical_boxes_are_the_same_rectangle() -> None:
    assert canonical_box(1, 2, 3, 5, 0.2) == pytest.approx((1, 2, 5, 3, 0.2 + math.pi / 2 - math.pi))
    assert canonical_box(1, 2, 5, 3, math.pi / 2) == pytest.approx((1, 2, 5, 3, -math.pi / 2))
    raw = [(1, 2, 3, 5, 0.2), (4, 4, 6, 2, 2.9), (4, 4, 6, 2, -4.0)]
    assert rotated_box_iou(raw, [canonical_box(*box) for box in raw]) == pytest.approx([1, 1, 1])


def test_splits_hold_pixel_boxes_and_normalised_targets() -> None:
    splits = get_task("rotated_box", **TINY).load_splits()
    assert splits.train.tensors["images"].shape == (24, 1, CANVAS, CANVAS)
    scale = np.array([CANVAS] * 4 + [1.0])
    np.testing.assert_allclose(splits.val.tensors["boxes"].numpy() * scale, np.array(splits.val.labels), rtol=1e-5)


def test_bad_options_name_the_option_and_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"task 'rotated_box': unknown option\(s\) \['angle'\]; "
                                         r"known: \['clutter', 'test_size', 'train_size', 'val_size'\]"):
        get_task("rotated_box", angle=10)
    with pytest.raises(ValueError, match="task 'rotated_box': val_size must be an integer >= 1, got 0"):
        get_task("rotated_box", val_size=0)


def test_any_output_is_a_valid_box() -> None:
    task = get_task("rotated_box", **TINY)
    # Saturated outputs, short of sides a trillionth of the other (below float64's resolution)
    boxes = task.predict(6 * torch.randn(500, 5, generator=torch.Generator().manual_seed(0)))
    assert ((boxes[:, :4] >= 0) & (boxes[:, :4] <= 1)).all()
    assert ((boxes[:, 4] >= -math.pi / 2) & (boxes[:, 4] <= math.pi / 2)).all()
    decoded = task.decode(boxes)
    assert rotated_box_iou(decoded, decoded).tolist() == pytest.approx([1.0] * 500)


def test_proxy_loss_is_smooth_l1_in_pixels_and_scaled_radians() -> None:
    task = get_task("rotated_box", **TINY)
    target = torch.tensor([[0.5, 0.25, 0.5, 0.125, 0.0]])
    batch = Split({"boxes": target}, [(32.0, 16.0, 32.0, 8.0, 0.0)])
    outputs = torch.logit(torch.tensor([[0.5, 0.25, 0.5, 0.125, 0.5]]))
    assert float(task.proxy_loss(outputs, batch)) == pytest.approx(0.0, abs=1e-5)
    turned = outputs.clone()
    turned[0, 4] = torch.logit(torch.tensor(0.5 + 0.25 / math.pi))  # theta = 0.25 rad
    assert float(task.proxy_loss(turned, batch)) == pytest.approx((0.25 * ANGLE_SCALE - 0.5) / 5, rel=1e-4)


def test_global_pairs_span_the_iou_range_and_cross_the_wrap() -> None:
    task = get_task("rotated_box", **TINY)
    predictions, targets, labels = task.random_pairs(2000, 1, torch.Generator().manual_seed(0))
    errors = task.item_errors(predictions, labels)
    expected = 1 - rotated_box_iou(task.decode(predictions), task.decode(targets))
    np.testing.assert_allclose(errors.numpy(), expected, atol=1e-6)
    assert (errors < 0.05).float().mean() > 0.1 and (errors > 0.5).float().mean() > 0.15 and (errors == 1).any()
    assert ((predictions[:, 4] >= -math.pi / 2) & (predictions[:, 4] < math.pi / 2)).all()
    # Overlapping boxes whose numbers are far apart: across the angle's wrap, or with w and h swapped.
    overlapping = errors < 0.5
    swapped = predictions[:, 3] > predictions[:, 2]
    across_the_wrap = ((predictions[:, 4] - targets[:, 4]).abs() > math.pi / 2) & ~swapped
    assert (overlapping & across_the_wrap).sum() > 20 and (overlapping & swapped).sum() > 50


def test_local_perturbation_without_noise_is_the_prediction() -> None:
    task = get_task("rotated_box", **TINY)
    outputs = torch.randn(16, 5)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(task.perturb(outputs, torch.zeros(16), g), task.predict(outputs))
    moved = task.perturb(outputs, torch.ones(16), g)
    assert (rotated_box_iou(task.decode(moved), task.decode(task.predict(outputs))) < 0.99).all()


def test_learned_surrogates_read_the_angle_without_its_seam() -> None:
    """The same rectangle on either side of the wrap gives the surrogate's network the same input;
    the surrogate itself (as logged to MLflow) reads boxes as ``predict`` makes them."""
    from surrogate_search.config import PostTuneConfig
    from surrogate_search.surrogates.base import create_loss

    task = get_task("rotated_box", **TINY)
    box = torch.tensor([[0.5, 0.5, 0.6, 0.2, math.pi / 2 - 1e-4]])
    same = torch.tensor([[0.5, 0.5, 0.6, 0.2, -math.pi / 2 + 1e-4]])
    assert rotated_box_iou(task.decode(box), task.decode(same))[0] > 0.999
    features = task.surrogate_features()
    torch.testing.assert_close(features(box), features(same), atol=1e-3, rtol=0)
    assert features(box).shape == (1, task.surrogate_feature_shape[1]) == (1, 6)

    surrogate = create_loss(task, PostTuneConfig.for_task(task, {"method": "deep_embedding"})).surrogate
    assert surrogate(box, box).item() == pytest.approx(0.0, abs=1e-3)
    assert abs(surrogate(box, same).item()) < 1e-2  # its network's two inputs are almost equal
