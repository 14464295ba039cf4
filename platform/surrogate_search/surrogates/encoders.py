"""Embedding networks ``h`` for learned surrogates, one per kind of prediction.

Every encoder maps ``(predictions, targets)`` to one embedding per item. Sequence encoders read
only their first argument (LS-ED's ``h(z)``; the label goes through the same ``h`` as a one-hot
sequence). The set encoder reads (probability, label) pairs, since a set-level metric such as F1
depends on which prediction belongs to which label.
"""

from __future__ import annotations

import torch
from torch import nn

from surrogate_search.registry import Registry
from surrogate_search.surrogates.options import SurrogateConfig

ENCODERS: Registry[nn.Module] = Registry("encoder")


class _SequenceEncoder(nn.Module):
    """``(items, T, C)`` per-frame probabilities -> ``(items, embedding)``; position-aware (the
    frame features are flattened, not pooled), since edit distance depends on order."""

    def __init__(self, num_classes: int, frames: int, cfg: SurrogateConfig, conv_layers: int, lstm_layers: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width_in = num_classes
        for _ in range(conv_layers):
            layers += [nn.Conv1d(width_in, cfg.width, 3, padding=1), nn.ReLU()]
            width_in = cfg.width
        self.conv = nn.Sequential(*layers)
        hidden = max(1, cfg.width // 2)  # per direction: an odd width gives 2 * (width // 2) features
        self.lstm = nn.LSTM(width_in, hidden, num_layers=lstm_layers, bidirectional=True,
                            batch_first=True) if lstm_layers else None
        features = 2 * hidden if lstm_layers else width_in
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(frames * features, cfg.embedding))

    def forward(self, predictions: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conv(predictions.transpose(1, 2)).transpose(1, 2)  # (items, T, F)
        if self.lstm is not None:
            x, _ = self.lstm(x)
        return self.head(x)


@ENCODERS.register("conv")
def conv_encoder(num_classes: int, frames: int, cfg: SurrogateConfig) -> nn.Module:
    return _SequenceEncoder(num_classes, frames, cfg, conv_layers=cfg.depth, lstm_layers=0)


@ENCODERS.register("lstm")
def lstm_encoder(num_classes: int, frames: int, cfg: SurrogateConfig) -> nn.Module:
    return _SequenceEncoder(num_classes, frames, cfg, conv_layers=0, lstm_layers=cfg.depth)


@ENCODERS.register("conv_lstm")
def conv_lstm_encoder(num_classes: int, frames: int, cfg: SurrogateConfig) -> nn.Module:
    return _SequenceEncoder(num_classes, frames, cfg, conv_layers=cfg.depth, lstm_layers=1)


class DeepSetsEncoder(nn.Module):
    """``(items, N)`` probabilities and ``(items, N)`` labels -> ``(items, embedding)``.

    ``phi`` embeds each (probability, label) pair, the mean over the set pools them (confusion
    matrix entries are such means), ``rho`` maps the pooled vector to the embedding."""

    def __init__(self, cfg: SurrogateConfig, features: int = 2) -> None:
        super().__init__()
        phi: list[nn.Module] = []
        width_in = features  # per set member: (probability, label) here; more in subclasses
        for _ in range(cfg.depth):
            phi += [nn.Linear(width_in, cfg.width), nn.GELU()]
            width_in = cfg.width
        self.phi = nn.Sequential(*phi)
        self.rho = nn.Sequential(nn.Linear(width_in, cfg.width), nn.GELU(), nn.Linear(cfg.width, cfg.embedding))

    def forward(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pairs = torch.stack([predictions, targets.to(predictions.dtype)], dim=-1)  # (items, N, 2)
        return self.pool(pairs)

    def pool(self, members: torch.Tensor) -> torch.Tensor:
        """``(items, N, features)`` -> ``(items, embedding)``: phi per member, mean, rho."""
        return self.rho(self.phi(members).mean(dim=1))


@ENCODERS.register("deepsets")
def deepsets_encoder(num_classes: int, frames: int, cfg: SurrogateConfig) -> nn.Module:
    return DeepSetsEncoder(cfg)


deepsets_encoder.reads_sets = True  # type: ignore[attr-defined]


def set_encoders() -> list[str]:
    """Encoders that score a whole set per item (their factory has ``reads_sets = True``): the ones a
    set-level metric needs, a plugin's own included."""
    return [name for name in ENCODERS.in_order() if getattr(ENCODERS.get(name), "reads_sets", False)]
