"""``rotated_box``: one word at a random angle on a cluttered canvas, a small CNN that regresses its
rotated box, smooth-L1 on ``(cx, cy, w, h, theta)`` as the proxy loss, judged by rotated IoU (the
setting of LS-IoU's published gain: rotated text boxes)."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from surrogate_search.tasks.base import Split, Splits, Task, TrainDefaults, register_task
from surrogate_search.tasks.box_localization import BoxRegressor, canvas_options
from surrogate_search.tasks.rotated_box_render import CANVAS, render_rotated_split

ANGLE_SCALE = CANVAS / 4
"""Proxy-loss units per radian of angle error: the end of a box half the canvas wide moves this
many pixels when it turns by one radian, so an angle error weighs about what it costs in pixels."""


class AngleOnCircle(nn.Module):
    """``(cx, cy, w, h, theta) -> (cx, cy, w, h, cos 2 theta, sin 2 theta)``, what a learned surrogate
    reads of a rotated box: a rectangle turned by half a turn is the same rectangle, so the angle
    enters as a point on a circle. Raw ``theta`` jumps from ``pi/2`` to ``-pi/2`` where IoU does not
    change, and a network reading it would have to learn that seam."""

    def forward(self, boxes: torch.Tensor) -> torch.Tensor:
        angle = 2.0 * boxes[..., 4:5]
        return torch.cat([boxes[..., :4], torch.cos(angle), torch.sin(angle)], dim=-1)


@functools.lru_cache(maxsize=6)
def _rendered(seed: int, split: str, size: int, clutter: int) -> tuple[np.ndarray, tuple[tuple[float, ...], ...]]:
    # ~0.6 ms an image: rendered per process, kept once rendered (a comparison and every run in it
    # load the same splits).
    images, boxes = render_rotated_split(seed, split, size, clutter)
    images.setflags(write=False)
    return images, tuple(boxes)


@register_task("rotated_box")
class RotatedBox(Task):
    """Find the rotated box of the one word on a 64 x 64 cluttered canvas.

    Boxes are ``(cx, cy, w, h, theta)``: centre and sides in pixels, ``theta`` the angle of the side
    along the text in radians, canonical with ``w >= h`` and ``theta`` in ``[-pi/2, pi/2)``. Each
    split draws its words from its own part of the vocabulary. Options: ``train_size``,
    ``val_size``, ``test_size`` (images per split) and ``clutter`` (at most this many strokes behind
    each word). The metric is the mean rotated IoU of the predicted boxes with the true ones;
    ``rotated_iou_ge_50`` and ``rotated_iou_ge_75`` (share of boxes with IoU >= 0.5 / 0.75) are
    reported.
    """

    name = "rotated_box"
    metric_name = "rotated_iou"
    report_metrics = ("rotated_iou_ge_50", "rotated_iou_ge_75")
    surrogate_shape = (1, 5)
    """A prediction is one rotated box: five numbers."""

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        defaults = {"train_size": 8000, "val_size": 500, "test_size": 1000, "clutter": 4}
        return canvas_options(self.name, options, defaults)

    def load_splits(self, cache_dir: Any = None) -> Splits:
        def split(name: str) -> Split:
            images, boxes = _rendered(self.seed, name, self.options[f"{name}_size"], self.options["clutter"])
            targets = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 5)
            targets[:, :4] /= CANVAS
            return Split({"images": torch.from_numpy(images.copy()).unsqueeze(1), "boxes": targets}, list(boxes))

        return Splits(split("train"), split("val"), split("test"))

    def default_model_options(self) -> dict[str, Any]:
        return {"channels": 16, "hidden": 128}

    def build_model(self, **model_options: Any) -> nn.Module:
        # The axis-aligned task's CNN, with a fifth output (the angle) and this canvas.
        return BoxRegressor(**{**self.default_model_options(), **model_options}, outputs=5, canvas=CANVAS)

    def train_defaults(self) -> TrainDefaults:
        return TrainDefaults(batch_size=64, lr=2e-3, weight_decay=1e-4, max_epochs=80, patience=8)

    def posttune_defaults(self) -> dict[str, Any]:
        # One box per item: a small MLP over (prediction, target) is the surrogate's natural encoder.
        return {"batch_size": 64, "surrogate.encoder": "mlp", "surrogate.batch_size": 256}

    def forward(self, model: nn.Module, batch: Split) -> torch.Tensor:
        return model(batch.tensors["images"].float().div(127.5).sub(1.0))

    def proxy_loss(self, outputs: torch.Tensor, batch: Split) -> torch.Tensor:
        """Smooth-L1 of ``(cx, cy, w, h)`` in pixels and ``theta`` times :data:`ANGLE_SCALE`
        (quadratic within 1), the five-parameter regression of rotated detectors. The angle error is
        taken as is, not modulo half a turn: a box just short of ``pi/2`` predicted just past
        ``-pi/2`` is the same rectangle but costs a full half turn (the boundary problem)."""
        scale = outputs.new_tensor([CANVAS, CANVAS, CANVAS, CANVAS, ANGLE_SCALE])
        return F.smooth_l1_loss(self.predict(outputs.float()) * scale, batch.tensors["boxes"] * scale, beta=1.0)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """``(B, 5)`` boxes ``(cx, cy, w, h, theta)``: centre and sides as fractions of the canvas
        (the logistic sigmoid of the outputs, as box_localization's corners), ``theta`` regressed
        directly, squashed into the canonical range: ``pi * (sigmoid(o4) - 1/2)`` radians."""
        return torch.cat([outputs[:, :4].sigmoid(), math.pi * (outputs[:, 4:].sigmoid() - 0.5)], dim=1)

    def decode(self, predictions: torch.Tensor) -> list[tuple[float, ...]]:
        scale = torch.tensor([CANVAS, CANVAS, CANVAS, CANVAS, 1.0], dtype=torch.float64)
        return [tuple(row) for row in (predictions.detach().double().cpu() * scale).tolist()]

    # --- what a learned surrogate sees -------------------------------------------------------------
    def surrogate_targets(self, batch: Split) -> torch.Tensor:
        return batch.tensors["boxes"]

    def surrogate_features(self) -> nn.Module:
        return AngleOnCircle()

    def random_pairs(self, n_items: int, set_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        """Target boxes of the sizes and shapes words have, at every angle (one in four within 0.15 rad
        of upright); predictions from exact to unrelated: centre, log-sides and angle moved by a
        shared random scale (many near misses), the angle wrapped into ``[-pi/2, pi/2)`` so that near
        misses across the wrap are seen, one prediction in eight the same rectangle described with
        ``w`` and ``h`` swapped (a quarter turn away), and one in ten a random box."""
        g = generator

        def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
            return low + (high - low) * torch.rand(*shape, generator=g)

        width = uniform(0.2, 0.9, n_items)
        height = width * uniform(0.12, 1.0, n_items)
        theta = uniform(-math.pi / 2, math.pi / 2, n_items)
        upright = torch.rand(n_items, generator=g) < 0.25  # near the wrap, where near misses cross it
        theta = torch.where(upright, torch.sign(theta) * (math.pi / 2 - uniform(0.0, 0.15, n_items)), theta)
        centre = uniform(0.25, 0.75, n_items, 2)
        targets = torch.stack([centre[:, 0], centre[:, 1], width, height, theta], dim=1)

        scale = 0.5 * torch.rand(n_items, generator=g) ** 2
        noise = torch.randn(n_items, 5, generator=g)
        moved = torch.stack([centre[:, 0] + scale * width * noise[:, 0], centre[:, 1] + scale * width * noise[:, 1],
                             width * torch.exp(scale * noise[:, 2]), height * torch.exp(scale * noise[:, 3]),
                             theta + 1.5 * scale * noise[:, 4]], dim=1)
        swapped = torch.stack([moved[:, 0], moved[:, 1], moved[:, 3], moved[:, 2], moved[:, 4] + math.pi / 2], dim=1)
        unrelated = torch.stack([*uniform(0.0, 1.0, 4, n_items), uniform(-math.pi / 2, math.pi / 2, n_items)], dim=1)
        draw = torch.rand(n_items, 1, generator=g)
        predictions = torch.where(draw < 0.125, swapped, torch.where(draw > 0.9, unrelated, moved))
        sides = predictions[:, :4].clamp(0.01, 1.0)
        angle = torch.remainder(predictions[:, 4:] + math.pi / 2, math.pi) - math.pi / 2
        return torch.cat([sides, angle], dim=1), targets, self.decode(targets)

    def perturb(self, outputs: torch.Tensor, noise: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # Noise on the model's raw outputs: at scale 1 a centre near mid-canvas moves by up to ~16
        # pixels and an angle near 0 by up to ~0.8 rad (the sigmoid's slope there is 1/4), less
        # where the model is confident.
        gauss = torch.randn(outputs.shape, generator=generator).to(outputs.device)
        return self.predict(outputs + noise.view(-1, 1) * gauss)
