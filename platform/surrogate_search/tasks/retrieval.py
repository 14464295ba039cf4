"""``retrieval``: an embedding model for rendered characters, trained with a supervised contrastive
loss on some characters and judged by recall@1 on characters it never saw (deep metric learning)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from surrogate_search.tasks.base import Split, Splits, Task, TrainDefaults, register_task
from surrogate_search.tasks.glyph_render import ALPHABET, GLYPH_SIZE, render_glyph_split

CODE_SEED = 20220621


class Embedder(nn.Module):
    """``(B, 1, 32, 32)`` image -> ``(B, dim)`` embedding (not normalised: see ``predict``)."""

    def __init__(self, channels: int = 16, dim: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width_in = 1
        for width in (channels, 2 * channels, 4 * channels):  # 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(width_in, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            width_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(width_in * (GLYPH_SIZE // 8) ** 2, 128), nn.ReLU(),
                                  nn.Linear(128, dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def supervised_contrastive_loss(embeddings: torch.Tensor, classes: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020; the N-pair / InfoNCE family): each image's
    softmax over its cosine similarities to the rest of the batch, divided by ``temperature``, and
    the mean negative log-probability of the images of its own class. Anchors without another image
    of their class in the batch do not count.

    A margin-based contrastive loss (``1 - s`` on positives, ``s - margin`` on close negatives) let
    this task's embedder collapse to one point in its first epoch (every similarity 1, loss stuck at
    the margin, test recall@1 0.08); here every negative stays in each anchor's denominator, so
    collapsing costs ``log(batch - 1)`` and the embedding spreads out."""
    e = F.normalize(embeddings.float(), dim=1)
    eye = torch.eye(len(e), dtype=torch.bool, device=e.device)
    log_p = (e @ e.T / temperature).masked_fill(eye, float("-inf")).log_softmax(dim=1)
    positive = (classes[:, None] == classes[None, :]) & ~eye
    anchors = positive.any(dim=1)
    if not anchors.any():
        return e.sum() * 0  # keeps the graph when no image has another of its class in the batch
    per_anchor = log_p.masked_fill(~positive, 0.0).sum(dim=1)[anchors] / positive.sum(dim=1)[anchors]
    return -per_anchor.mean()


@functools.lru_cache(maxsize=1)
def class_codes(dim: int) -> torch.Tensor:
    """One fixed unit vector per character: a perfect embedding, far from every other class's."""
    codes = torch.randn(len(ALPHABET) * 4, dim, generator=torch.Generator().manual_seed(CODE_SEED))
    return F.normalize(codes, dim=1)


@functools.lru_cache(maxsize=6)
def _rendered(seed: int, split: str, per_class: int) -> tuple[np.ndarray, tuple[str, ...]]:
    images, labels = render_glyph_split(seed, split, per_class)
    images.setflags(write=False)
    return images, tuple(labels)


@register_task("retrieval")
class Retrieval(Task):
    """Image retrieval on 32 x 32 rendered characters: 36 characters to train on, 10 other ones for
    validation and 16 more for test, dealt by the seed. Every test image queries the other test
    images; the metric is recall@1 (recall@2, @4, @8 reported).

    Options: ``train_per_class``, ``val_per_class``, ``test_per_class`` (images per character) and
    ``dim`` (embedding size)."""

    name = "retrieval"
    version = 2
    """2: the proxy loss is the supervised contrastive loss (1's margin loss collapsed the embedder)."""
    metric_name = "recall_at_1"
    report_metrics = ("recall_at_2", "recall_at_4", "recall_at_8")

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        defaults = {"train_per_class": 48, "val_per_class": 24, "test_per_class": 32, "dim": 32}
        unknown = set(options) - set(defaults)
        if unknown:
            raise ValueError(f"task 'retrieval': unknown option(s) {sorted(unknown)}; known: {sorted(defaults)}")
        merged = {**defaults, **options}
        for key, value in merged.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 2:
                raise ValueError(f"task 'retrieval': {key} must be an integer >= 2, got {value!r}")
        return merged

    def load_splits(self, cache_dir: Any = None) -> Splits:
        def split(name: str) -> Split:
            images, labels = _rendered(self.seed, name, self.options[f"{name}_per_class"])
            classes = torch.tensor([ALPHABET.index(c) for c in labels], dtype=torch.long)
            return Split({"images": torch.from_numpy(images.copy()).unsqueeze(1), "classes": classes}, list(labels))

        return Splits(split("train"), split("val"), split("test"))

    def default_model_options(self) -> dict[str, Any]:
        return {"channels": 16, "dim": self.options["dim"]}

    def build_model(self, **model_options: Any) -> nn.Module:
        return Embedder(**{**self.default_model_options(), **model_options})

    def train_defaults(self) -> TrainDefaults:
        return TrainDefaults(batch_size=128, lr=2e-3, weight_decay=1e-4, max_epochs=80, patience=8)

    def posttune_defaults(self) -> dict[str, Any]:
        # An item is a batch-sized set scored by its similarity ranking: few sets per surrogate update.
        return {"batch_size": 128, "surrogate.encoder": "ranking", "surrogate.batch_size": 8}

    def forward(self, model: nn.Module, batch: Split) -> torch.Tensor:
        return model(batch.tensors["images"].float().div(127.5).sub(1.0))

    def proxy_loss(self, outputs: torch.Tensor, batch: Split) -> torch.Tensor:
        return supervised_contrastive_loss(outputs, batch.tensors["classes"])

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings, ``(B, dim)``."""
        return F.normalize(outputs, dim=-1)

    def decode(self, predictions: torch.Tensor) -> list[np.ndarray]:
        """One embedding per image: what recall@k ranks (the labels are the characters)."""
        return list(predictions.detach().double().cpu().numpy())

    # --- what a learned surrogate sees: sets of embeddings with their classes ------------------------
    def surrogate_targets(self, batch: Split) -> torch.Tensor:
        """Each image's class code (:func:`class_codes`): the embedding of a perfect model."""
        return class_codes(self.options["dim"])[batch.tensors["classes"].cpu()].to(batch.tensors["classes"].device)

    def random_pairs(self, n_items: int, set_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        """Sets of ``set_size`` samples from a few classes each, embedded around random class
        centres with a spread from none (recall 1) to far past the centres' distance (chance)."""
        g, dim, codes = generator, self.options["dim"], class_codes(self.options["dim"])
        classes_per_set = max(2, set_size // 4)
        chosen = torch.stack([torch.randperm(len(codes), generator=g)[:classes_per_set] for _ in range(n_items)])
        members = torch.randint(classes_per_set, (n_items, set_size), generator=g)
        classes = chosen.gather(1, members)                                       # (items, set_size)
        centres = F.normalize(torch.randn(n_items, classes_per_set, dim, generator=g), dim=-1).gather(
            1, members[..., None].expand(-1, -1, dim))
        spread = 1.5 * torch.rand(n_items, 1, 1, generator=g) ** 2
        embeddings = F.normalize(centres + spread * torch.randn(n_items, set_size, dim, generator=g), dim=-1)
        labels = [[ALPHABET[int(c) % len(ALPHABET)] + str(int(c) // len(ALPHABET)) for c in row] for row in classes]
        return embeddings, codes[classes], labels

    def perturb(self, outputs: torch.Tensor, noise: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # Noise relative to each embedding's own length: scale 1 moves it by about its length.
        gauss = torch.randn(outputs.shape, generator=generator).to(outputs.device)
        lengths = outputs.norm(dim=-1, keepdim=True) / outputs.shape[-1] ** 0.5
        return self.predict(outputs + noise.view(-1, 1) * lengths * gauss)
