"""``mlp``: an encoder for tasks whose prediction per sample is a short vector (a box's corners).

It reads the prediction and its target together, ``h(z, y) = MLP([z, y])``, as the set encoder
reads (probability, label) pairs: a relative measure such as IoU depends on where the prediction
lies with respect to the target, so the surrogate ``||h(z, y) - h(y, y)||`` is zero at ``z = y``
and free to learn the rest.
"""

from __future__ import annotations

import torch
from torch import nn

from surrogate_search.surrogates.encoders import ENCODERS
from surrogate_search.surrogates.options import SurrogateConfig


class PairMLP(nn.Module):
    """``(items, *shape)`` predictions and targets -> ``(items, embedding)``; ``shape`` is the
    task's ``surrogate_shape`` (``(1, 4)`` for one box)."""

    def __init__(self, features: int, cfg: SurrogateConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width_in = 2 * features
        for _ in range(cfg.depth):
            layers += [nn.Linear(width_in, cfg.width), nn.GELU()]
            width_in = cfg.width
        self.net = nn.Sequential(*layers, nn.Linear(width_in, cfg.embedding))

    def forward(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pair = torch.cat([predictions.flatten(1), targets.to(predictions.dtype).flatten(1)], dim=1)
        return self.net(pair)


@ENCODERS.register("mlp")
def mlp_encoder(num_classes: int, frames: int, cfg: SurrogateConfig) -> nn.Module:
    return PairMLP(max(1, frames) * num_classes, cfg)
