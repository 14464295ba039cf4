"""Recall@k of an embedding over a labelled set, each sample querying all the others (retrieval)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from surrogate_search.metrics.base import Metric, check_same_length, register_metric


def retrieval_hits(embeddings: Any, labels: Sequence[Any], k: int) -> np.ndarray:
    """For each query that has at least one other sample of its class: 1.0 if one of its ``k``
    nearest other samples (Euclidean distance; for unit-length embeddings, the same order as
    cosine similarity) shares its label, else 0.0. Equal distances keep the set's order."""
    e = np.asarray(embeddings, dtype=np.float64)
    e = e.reshape(len(e), -1)
    check_same_length(e, labels, "recall_at_k")
    y = np.asarray(list(labels))
    same = y[:, None] == y[None, :]
    np.fill_diagonal(same, False)
    queries = np.flatnonzero(same.any(1))
    if not len(queries):
        return np.zeros(0)
    squared = (e * e).sum(1)
    distances = squared[queries, None] + squared[None, :] - 2.0 * e[queries] @ e.T
    distances[np.arange(len(queries)), queries] = np.inf  # a query never retrieves itself
    nearest = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return same[queries[:, None], nearest].any(1).astype(np.float64)


class RecallAtK(Metric):
    """Share of queries with a sample of their class among their ``k`` nearest neighbours, every
    sample of the set querying the rest (the Stanford Online Products / CUB protocol). Queries
    whose class has no other sample are left out; a set without any such query scores 0."""

    higher_is_better = True
    decomposable = False
    k: int

    def compute(self, predictions: Any, targets: Sequence[Any]) -> float:
        hits = retrieval_hits(predictions, targets, self.k)
        return float(hits.mean()) if len(hits) else 0.0


def _recall_at(k: int) -> type[RecallAtK]:
    cls = type(f"RecallAt{k}", (RecallAtK,), {"name": f"recall_at_{k}", "k": k,
                                               "__doc__": f"Recall@{k}: see :class:`RecallAtK`."})
    return register_metric(f"recall_at_{k}")(cls)  # type: ignore[return-value]


RecallAt1, RecallAt2, RecallAt4, RecallAt8 = (_recall_at(k) for k in (1, 2, 4, 8))
