"""The Recall@k surrogate (Patel, Tolias, Matas, CVPR 2022): recall@k of a batch with its two step
functions replaced by sigmoids, plus similarity mixup (SiMix).

For a query ``q`` with positives ``P`` (its class, itself excluded) and similarities ``s``:

- the rank of a positive ``p`` among all other samples ``j`` is ``1 + sum_j H(s_qj - s_qp)``;
  smoothed, ``r(p) = 1 + sum_j sigmoid((s_qj - s_qp) / tau_rank)``;
- recall@k of ``q`` is 1 when some positive ranks within ``k``; smoothed,
  ``R_k(q) = min(k, sum_p sigmoid((k - r(p)) / tau_k)) / min(k, |P|)``;
- the loss is ``1 - R_k`` averaged over the queries that have a positive and over ``k`` in
  1, 2, 4, ... up to ``max_k``.

SiMix adds virtual samples to the gallery: for two samples ``a``, ``b`` of one class and
``alpha ~ U(0, 1)``, a sample of that class whose similarity to every query is
``alpha s_qa + (1 - alpha) s_qb`` (the embeddings mixed, not renormalised). A query never sees a
mixture of itself. The paper's defaults: ``tau_rank = 0.01``, ``tau_k = 1``, k up to 16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from surrogate_search.metrics import RecallAtK
from surrogate_search.surrogates.base import PostTuneLoss, register_loss
from surrogate_search.tasks import Split, Task
from surrogate_search.utils import check_range


def similarity_mixup(embeddings: torch.Tensor, classes: torch.Tensor, max_mixes: int,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to ``max_mixes`` virtual samples ``(mixed, their classes, (M, 2) indices of their parents)``
    from random pairs of same-class samples."""
    same = classes[:, None] == classes[None, :]
    a, b = torch.nonzero(torch.triu(same, diagonal=1), as_tuple=True)
    if len(a) > max_mixes:
        keep = torch.randperm(len(a), generator=generator)[:max_mixes].to(a.device)
        a, b = a[keep], b[keep]
    alpha = torch.rand(len(a), 1, generator=generator).to(embeddings)
    return alpha * embeddings[a] + (1 - alpha) * embeddings[b], classes[a], torch.stack([a, b], dim=1)


def recall_at_k_surrogate(embeddings: torch.Tensor, classes: torch.Tensor, ks: list[int], *, tau_rank: float = 0.01,
                          tau_k: float = 1.0, max_mixes: int = 0, generator: torch.Generator | None = None
                          ) -> torch.Tensor:
    """``1 - `` smoothed recall@k of unit-length ``embeddings`` ``(B, D)`` with class ids ``(B,)``,
    averaged over ``ks`` and the queries with a positive; with ``max_mixes > 0``, SiMix samples join
    the gallery. Returns 0 (with a graph) for a batch without any positive pair."""
    b = len(embeddings)
    gallery, gallery_classes = embeddings, classes
    excluded = torch.eye(b, dtype=torch.bool, device=embeddings.device)        # (queries, gallery)
    if max_mixes:
        mixed, mixed_classes, parents = similarity_mixup(embeddings, classes, max_mixes, generator)
        gallery, gallery_classes = torch.cat([embeddings, mixed]), torch.cat([classes, mixed_classes])
        own = (parents[None, :, 0] == torch.arange(b, device=embeddings.device)[:, None]) | (
            parents[None, :, 1] == torch.arange(b, device=embeddings.device)[:, None])
        excluded = torch.cat([excluded, own], dim=1)
    similarity = embeddings @ gallery.T                                         # (Q, G)
    positive = (classes[:, None] == gallery_classes[None, :]) & ~excluded
    # rank[q, p] = 1 + sum over j != p, j not excluded, of sigmoid((s_qj - s_qp) / tau_rank)
    above = torch.sigmoid((similarity[:, None, :] - similarity[:, :, None]) / tau_rank)   # (Q, p, j)
    counted = (~excluded)[:, None, :] & ~torch.eye(len(gallery), dtype=torch.bool, device=embeddings.device)[None]
    rank = 1 + (above * counted).sum(-1)                                        # (Q, G)
    n_positive = positive.sum(1)
    queries = n_positive > 0
    if not queries.any():
        return similarity.sum() * 0
    recalls = []
    for k in ks:
        hits = (torch.sigmoid((k - rank) / tau_k) * positive).sum(1)
        recalls.append(hits.clamp(max=float(k)) / n_positive.clamp(max=k).clamp_min(1))
    return 1 - torch.stack(recalls)[:, queries].mean()


@dataclass
class RecallAtKOptions:
    rank_temperature: float = 0.01
    """tau_rank: how sharply a similarity difference counts as "ranked above" (cosine units)."""
    recall_temperature: float = 1.0
    """tau_k: how sharply a smoothed rank counts as "within k" (rank units)."""
    max_k: int = 16
    """The loss averages recall@k over k = 1, 2, 4, ... up to this."""
    mixup: bool = True
    """SiMix: add virtual same-class mixtures to the gallery (as many as the batch has samples)."""

    def validate(self) -> None:
        check_range("recall_at_k", self, positive=("rank_temperature", "recall_temperature", "max_k"))


@register_loss("recall_at_k")
class RecallAtKLoss(PostTuneLoss):
    """The smoothed recall@k of each batch (every sample querying the rest), for every task judged
    by a :class:`~surrogate_search.metrics.RecallAtK` metric whose ``predict`` gives embeddings and
    whose batches hold the class ids as ``classes``."""

    Options = RecallAtKOptions

    @classmethod
    def supports(cls, task: Task) -> bool:
        return isinstance(task.metric, RecallAtK)

    def model_loss(self, outputs: torch.Tensor, batch: Split) -> tuple[torch.Tensor, dict[str, float]]:
        o = self.options
        ks = [2 ** i for i in range(o.max_k.bit_length()) if 2 ** i <= o.max_k]
        embeddings = self.task.predict(outputs.float())
        loss = recall_at_k_surrogate(embeddings, batch.tensors["classes"], ks, tau_rank=o.rank_temperature,
                                     tau_k=o.recall_temperature, max_mixes=len(batch) if o.mixup else 0)
        return loss, {"recall_at_k_loss": float(loss.detach())}
