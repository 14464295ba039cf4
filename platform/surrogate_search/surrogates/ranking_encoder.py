"""``ranking``: a set encoder for retrieval, reading a set of embeddings as its similarity ranking.

An item is a set of ``N`` embeddings ``(items, N, D)`` with targets of the same shape (each
sample's class code: equal codes mean the same class). For each sample as a query, the encoder
sorts the other samples by cosine similarity and keeps the ``K`` highest similarities with a flag
for each saying whether it shares the query's class: recall@k is a function of exactly these flags
near the top of the ranking, and the similarities carry the gradient. ``phi`` embeds each query's
``2K`` features, the mean over queries pools them, ``rho`` gives the embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from surrogate_search.surrogates.encoders import ENCODERS, DeepSetsEncoder
from surrogate_search.surrogates.options import SurrogateConfig

TOP = 16
"""Neighbours per query that the encoder reads (recall@k up to k = 16)."""


def top_neighbours(predictions: torch.Tensor, targets: torch.Tensor, top: int = TOP) -> tuple[torch.Tensor, torch.Tensor]:
    """``(similarities, same_class)``, each ``(items, N, top)``: every query's ``top`` most similar
    other samples, most similar first, and whether each is of the query's class."""
    z = F.normalize(predictions, dim=-1)
    similarity = z @ z.transpose(1, 2)
    codes = F.normalize(targets.to(predictions.dtype), dim=-1)
    same = (codes @ codes.transpose(1, 2)) > 0.999
    n = similarity.shape[-1]
    self_mask = torch.eye(n, dtype=torch.bool, device=similarity.device)
    similarity = similarity.masked_fill(self_mask, -3.0)  # below any cosine: never its own neighbour
    values, order = similarity.topk(min(top, n - 1), dim=-1)
    return values, same.gather(-1, order).to(predictions.dtype)


class RankingEncoder(DeepSetsEncoder):
    def __init__(self, cfg: SurrogateConfig, top: int = TOP) -> None:
        super().__init__(cfg, features=2 * top)  # each query: its top similarities and same-class flags
        self.top = top

    def forward(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        values, same = top_neighbours(predictions, targets, self.top)
        if values.shape[-1] < self.top:  # sets smaller than top + 1: pad as "no neighbour"
            pad = self.top - values.shape[-1]
            values, same = F.pad(values, (0, pad), value=-1.0), F.pad(same, (0, pad))
        return self.pool(torch.cat([values, same], dim=-1))


@ENCODERS.register("ranking")
def ranking_encoder(num_classes: int, frames: int, cfg: SurrogateConfig) -> nn.Module:
    return RankingEncoder(cfg)


ranking_encoder.reads_sets = True  # type: ignore[attr-defined]
