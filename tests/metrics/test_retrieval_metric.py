"""Recall@k against a brute force written the slow, obvious way."""

from __future__ import annotations

import numpy as np
import pytest

from surrogate_search.metrics import get_metric, retrieval_hits


def brute_force_recall(embeddings: np.ndarray, labels: list, k: int) -> float:
    hits = []
    for q in range(len(labels)):
        others = [j for j in range(len(labels)) if j != q]
        if not any(labels[j] == labels[q] for j in others):
            continue
        ranked = sorted(others, key=lambda j: (float(np.sum((embeddings[q] - embeddings[j]) ** 2)), j))
        hits.append(any(labels[j] == labels[q] for j in ranked[:k]))
    return float(np.mean(hits)) if hits else 0.0


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_recall_matches_brute_force(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    labels = [f"c{v}" for v in rng.integers(0, max(2, n // 3), size=n)]
    embeddings = rng.normal(size=(n, int(rng.integers(1, 6))))
    if seed == 3:  # a grid: many equal distances, broken by the order of the set
        embeddings = rng.integers(0, 2, size=(n, 2)).astype(float)
    assert get_metric(f"recall_at_{k}").compute(embeddings, labels) == pytest.approx(brute_force_recall(embeddings, labels, k))


def test_known_values() -> None:
    # 1-D points: 0 and 1 are class a, 5 is class b, 5.5 and 9 are class c
    points = np.array([[0.0], [1.0], [5.0], [5.5], [9.0]])
    labels = ["a", "a", "b", "c", "c"]
    # queries with a positive: 0, 1 (each other's nearest), 5.5 (nearest is 5: b, a miss), 9 (nearest 5.5: hit)
    assert retrieval_hits(points, labels, 1).tolist() == [1.0, 1.0, 0.0, 1.0]
    assert get_metric("recall_at_1").compute(points, labels) == pytest.approx(0.75)
    assert get_metric("recall_at_2").compute(points, labels) == pytest.approx(1.0)
    # no query has a positive: nothing to retrieve, scored 0
    assert get_metric("recall_at_1").compute(points[:3], ["a", "b", "c"]) == 0.0


def test_a_query_never_retrieves_itself_and_ties_keep_the_set_order() -> None:
    # all at one point: a query that found itself would always hit. Query 0 ranks 1 (class 2)
    # before 2 (class 1): a miss; query 2 ranks 0 first: a hit.
    points = np.zeros((3, 2))
    assert retrieval_hits(points, [1, 2, 1], 1).tolist() == [0.0, 1.0]
    assert get_metric("recall_at_1").compute(points, [1, 2, 1]) == pytest.approx(0.5)


def test_mismatched_lengths_are_named() -> None:
    with pytest.raises(ValueError, match="recall_at_k: got 3 predictions for 2 targets"):
        retrieval_hits(np.zeros((3, 2)), [1, 2], 1)
