"""``box_localization``: one digit on a cluttered canvas, a small CNN that regresses its box, smooth-L1
as the proxy loss, judged by IoU (the metric LS-IoU learns a surrogate of)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from surrogate_search.tasks.base import Split, Splits, Task, TrainDefaults, register_task
from surrogate_search.tasks.box_render import CANVAS, render_box_split


class BoxRegressor(nn.Module):
    """``(B, 1, canvas, canvas)`` image -> ``outputs`` unbounded numbers (here 4, see
    :meth:`BoxLocalization.predict`; ``rotated_box`` asks for 5 from a 64-pixel canvas)."""

    def __init__(self, channels: int = 16, hidden: int = 128, *, outputs: int = 4, canvas: int = CANVAS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width_in = 1
        for width in (channels, 2 * channels, 4 * channels, 4 * channels):  # four halvings: 48 -> 3, 64 -> 4
            layers += [nn.Conv2d(width_in, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            width_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(width_in * (canvas // 16) ** 2, hidden), nn.ReLU(),
                                  nn.Linear(hidden, outputs))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


@functools.lru_cache(maxsize=6)
def _rendered(seed: int, split: str, size: int, clutter: int) -> tuple[np.ndarray, tuple[tuple[float, ...], ...]]:
    # ~1.5 ms an image: cheap enough to render per process, kept once rendered (a comparison
    # and every run in it load the same splits).
    images, boxes = render_box_split(seed, split, size, clutter)
    images.setflags(write=False)
    return images, tuple(boxes)


def canvas_options(task: str, options: dict[str, Any], defaults: dict[str, int]) -> dict[str, Any]:
    """``defaults`` updated with ``options`` for a task of images on a canvas: split sizes (integers
    >= 1) and ``clutter`` (an integer >= 0); an unknown option is named with the known ones."""
    unknown = set(options) - set(defaults)
    if unknown:
        raise ValueError(f"task {task!r}: unknown option(s) {sorted(unknown)}; known: {sorted(defaults)}")
    merged = {**defaults, **options}
    for key, value in merged.items():
        low = 0 if key == "clutter" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"task {task!r}: {key} must be an integer >= {low}, got {value!r}")
    return merged


@register_task("box_localization")
class BoxLocalization(Task):
    """Localise the one digit on a 48 x 48 cluttered canvas; boxes ``(x1, y1, x2, y2)`` in pixels.

    Options: ``train_size``, ``val_size``, ``test_size`` (images per split) and ``clutter`` (at most
    this many strokes behind each digit). The metric is the mean IoU of the predicted boxes with the
    true ones; ``iou_ge_50`` and ``iou_ge_75`` (share of boxes with IoU >= 0.5 / 0.75) are reported.
    """

    name = "box_localization"
    metric_name = "iou"
    report_metrics = ("iou_ge_50", "iou_ge_75")
    surrogate_shape = (1, 4)
    """A prediction is one box: four coordinates."""

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        defaults = {"train_size": 4000, "val_size": 500, "test_size": 1000, "clutter": 4}
        return canvas_options(self.name, options, defaults)

    def load_splits(self, cache_dir: Any = None) -> Splits:
        def split(name: str) -> Split:
            images, boxes = _rendered(self.seed, name, self.options[f"{name}_size"], self.options["clutter"])
            targets = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) / CANVAS
            return Split({"images": torch.from_numpy(images.copy()).unsqueeze(1), "boxes": targets}, list(boxes))

        return Splits(split("train"), split("val"), split("test"))

    def default_model_options(self) -> dict[str, Any]:
        return {"channels": 16, "hidden": 128}

    def build_model(self, **model_options: Any) -> nn.Module:
        return BoxRegressor(**{**self.default_model_options(), **model_options})

    def train_defaults(self) -> TrainDefaults:
        return TrainDefaults(batch_size=64, lr=2e-3, weight_decay=1e-4, max_epochs=80, patience=8)

    def posttune_defaults(self) -> dict[str, Any]:
        # One box per item: a small MLP over (prediction, target) is the surrogate's natural encoder.
        return {"batch_size": 64, "surrogate.encoder": "mlp", "surrogate.batch_size": 256}

    def forward(self, model: nn.Module, batch: Split) -> torch.Tensor:
        return model(batch.tensors["images"].float().div(127.5).sub(1.0))

    def proxy_loss(self, outputs: torch.Tensor, batch: Split) -> torch.Tensor:
        """Smooth-L1 of the corners in pixels (quadratic within 1 pixel), as in Fast R-CNN."""
        return F.smooth_l1_loss(self.predict(outputs.float()) * CANVAS, batch.tensors["boxes"] * CANVAS, beta=1.0)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """``(B, 4)`` boxes ``(x1, y1, x2, y2)`` as fractions of the canvas, always inside it and never
        inverted: ``x1 = s(o0)``, ``x2 = x1 + (1 - x1) s(o2)`` (``s`` the logistic sigmoid), likewise y."""
        start = outputs[:, :2].sigmoid()
        end = start + (1 - start) * outputs[:, 2:].sigmoid()
        return torch.cat([start, end], dim=1)

    def decode(self, predictions: torch.Tensor) -> list[tuple[float, ...]]:
        return [tuple(row) for row in (predictions.detach().double().cpu() * CANVAS).tolist()]

    # --- what a learned surrogate sees -------------------------------------------------------------
    def surrogate_targets(self, batch: Split) -> torch.Tensor:
        return batch.tensors["boxes"]

    def random_pairs(self, n_items: int, set_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        """Target boxes of every size the task has; predictions from exact to unrelated: each corner
        moved by up to 0.6 box sides, and one prediction in ten a random box."""
        g = generator
        size = 0.15 + 0.6 * torch.rand(n_items, 2, generator=g)
        start = torch.rand(n_items, 2, generator=g) * (1 - size)
        targets = torch.cat([start, start + size], dim=1)
        scale = 0.6 * torch.rand(n_items, 1, generator=g) ** 2  # many near misses, where IoU changes fastest
        moved = targets + scale * size.repeat(1, 2) * torch.randn(n_items, 4, generator=g)
        unrelated = torch.rand(n_items, 4, generator=g)
        moved = torch.where(torch.rand(n_items, 1, generator=g) < 0.1, unrelated, moved).clamp(0, 1)
        x, y = moved[:, 0::2].sort(dim=1).values, moved[:, 1::2].sort(dim=1).values
        predictions = torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)
        return predictions, targets, self.decode(targets)

    def perturb(self, outputs: torch.Tensor, noise: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # Noise on the model's raw outputs: at scale 1 a corner near mid-canvas moves by up to ~12 pixels
        # (the sigmoid's slope there is 1/4 of 48), less where the model is confident.
        gauss = torch.randn(outputs.shape, generator=generator).to(outputs.device)
        return self.predict(outputs + noise.view(-1, 1) * gauss)
