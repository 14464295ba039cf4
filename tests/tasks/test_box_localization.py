"""``box_localization``: rendered canvases, boxes that stay valid, the surrogate-side hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from surrogate_search.metrics import box_iou
from surrogate_search.tasks import Split, get_task
from surrogate_search.tasks.box_render import CANVAS, MAX_SIDE, MIN_SIDE, render_box_image, render_box_split

TINY = {"train_size": 24, "val_size": 8, "test_size": 8}


def test_rendering_is_reproducible_and_the_box_holds_the_digit() -> None:
    images, boxes = render_box_split(seed=3, split="train", size=30)
    again, boxes_again = render_box_split(seed=3, split="train", size=30)
    np.testing.assert_array_equal(images, again)
    assert boxes == boxes_again and images.shape == (30, CANVAS, CANVAS) and images.dtype == np.uint8
    sides = np.array([[x2 - x1, y2 - y1] for x1, y1, x2, y2 in boxes])
    assert sides.min() >= 1 and sides.max() <= MAX_SIDE and len({b[:2] for b in boxes}) > 20
    # Without clutter or noise, the box is where the image differs from its background.
    for i in range(10):
        rng = np.random.default_rng(i)
        image, (x1, y1, x2, y2) = render_box_image(rng, "val", clutter=0)
        background = np.median(image)
        inside = np.zeros_like(image, dtype=bool)
        inside[int(y1):int(y2), int(x1):int(x2)] = True
        bright = np.abs(image.astype(float) - background) > 100  # ink well above any noise
        assert bright[inside].any() and not bright[~inside].any()


def test_splits_hold_pixel_boxes_and_normalised_targets() -> None:
    splits = get_task("box_localization", **TINY).load_splits()
    assert splits.train.tensors["images"].shape == (24, 1, CANVAS, CANVAS)
    np.testing.assert_allclose(splits.val.tensors["boxes"].numpy() * CANVAS, np.array(splits.val.labels), rtol=1e-6)
    widths = splits.train.tensors["boxes"][:, 2] - splits.train.tensors["boxes"][:, 0]
    assert float(widths.min()) * CANVAS >= 1 and float(widths.max()) * CANVAS <= MAX_SIDE
    assert MIN_SIDE <= MAX_SIDE


def test_bad_options_name_the_option_and_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"task 'box_localization': unknown option\(s\) \['size'\]; "
                                         r"known: \['clutter', 'test_size', 'train_size', 'val_size'\]"):
        get_task("box_localization", size=10)
    with pytest.raises(ValueError, match="train_size must be an integer >= 1, got 0"):
        get_task("box_localization", train_size=0)
    with pytest.raises(ValueError, match="clutter must be an integer >= 0, got 1.5"):
        get_task("box_localization", clutter=1.5)


def test_any_output_is_a_valid_box_inside_the_canvas() -> None:
    task = get_task("box_localization", **TINY)
    boxes = task.predict(20 * torch.randn(500, 4))
    assert ((boxes >= 0) & (boxes <= 1)).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    decoded = task.decode(boxes)
    assert box_iou(decoded, decoded).tolist() == pytest.approx([1.0] * 500)  # never an inverted box


def test_proxy_loss_is_smooth_l1_in_pixels() -> None:
    task = get_task("box_localization", **TINY)
    target = torch.tensor([[0.25, 0.25, 0.5, 0.75]])
    batch = Split({"boxes": target}, [(12.0, 12.0, 24.0, 36.0)])
    outputs = torch.logit(torch.tensor([[0.25, 0.25, 1 / 3, 2 / 3]]))  # x2 = .25 + .75/3, y2 = .25 + .75*2/3
    assert float(task.proxy_loss(outputs, batch)) == pytest.approx(0.0, abs=1e-4)
    shifted = outputs.clone()
    shifted[0, 2] = torch.logit(torch.tensor((0.5 + 3 / CANVAS - 0.25) / 0.75))  # x2 three pixels right
    assert float(task.predict(shifted)[0, 2]) * CANVAS == pytest.approx(27.0, rel=1e-5)
    assert float(task.proxy_loss(shifted, batch)) == pytest.approx((3 - 0.5) / 4, rel=1e-4)  # linear past 1 px


def test_global_pairs_span_the_iou_range_and_errors_are_one_minus_iou() -> None:
    task = get_task("box_localization", **TINY)
    predictions, targets, labels = task.random_pairs(2000, 1, torch.Generator().manual_seed(0))
    errors = task.item_errors(predictions, labels)
    expected = 1 - box_iou(task.decode(predictions), task.decode(targets))
    np.testing.assert_allclose(errors.numpy(), expected, atol=1e-6)
    assert (errors < 0.05).float().mean() > 0.1 and (errors > 0.5).float().mean() > 0.15 and (errors == 1).any()


def test_local_perturbation_without_noise_is_the_prediction() -> None:
    task = get_task("box_localization", **TINY)
    outputs = torch.randn(16, 4)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(task.perturb(outputs, torch.zeros(16), g), task.predict(outputs))
    moved = task.perturb(outputs, torch.ones(16), g)
    assert (box_iou(task.decode(moved), task.decode(task.predict(outputs))) < 0.99).all()
