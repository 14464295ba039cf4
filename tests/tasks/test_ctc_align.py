"""CTC forced alignment against a brute force over every frame sequence of small problems."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch

from surrogate_search.tasks.ctc_align import aligned_targets, ctc_align, ctc_best_path, frames_needed
from surrogate_search.tasks.synthetic_text import BLANK, FRAMES, NUM_CLASSES, encode_labels, greedy_ctc_decode
from surrogate_search.tasks.text_pairs import ctc_path


def collapse(path: list[int] | tuple[int, ...], blank: int = 0) -> tuple[int, ...]:
    merged = [c for i, c in enumerate(path) if i == 0 or c != path[i - 1]]
    return tuple(c for c in merged if c != blank)


@functools.lru_cache(maxsize=None)
def all_sequences(frames: int, classes: int) -> tuple[np.ndarray, tuple[tuple[int, ...], ...]]:
    sequences = np.array(list(itertools.product(range(classes), repeat=frames)), dtype=np.int64)
    return sequences, tuple(collapse(tuple(s)) for s in sequences.tolist())


def brute_force(log_probs: np.ndarray, label: tuple[int, ...]) -> tuple[float, list[np.ndarray]]:
    """Best score over all ``C^T`` frame sequences that collapse to ``label``, and every sequence
    that reaches it (more than one when the best is not unique); ``-inf`` and none if none does."""
    frames, classes = log_probs.shape
    sequences, collapsed = all_sequences(frames, classes)
    keep = np.array([c == label for c in collapsed])
    if not keep.any():
        return float("-inf"), []
    scores = log_probs[np.arange(frames), sequences[keep]].sum(1)
    best = scores.max()
    return float(best), list(sequences[keep][np.isclose(scores, best, rtol=0, atol=1e-9)])


def random_case(rng: np.random.Generator, frames: int, classes: int, length: int, batch: int = 1):
    log_probs = torch.from_numpy(rng.normal(0, 2, (batch, frames, classes))).log_softmax(-1)
    # Padding past each length holds junk on purpose: it must be ignored.
    targets = torch.from_numpy(rng.integers(1, classes, (batch, max(length, 1))))
    return log_probs, targets


def check_against_brute_force(log_probs: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> None:
    result = ctc_align(log_probs, targets, lengths)
    for i in range(len(lengths)):
        label = tuple(targets[i, : lengths[i]].tolist())
        best, argmaxes = brute_force(log_probs[i].double().numpy(), label)
        path = result.paths[i].tolist()
        if not argmaxes:
            assert not result.feasible[i] and result.scores[i] == float("-inf")
            continue
        assert result.feasible[i]
        assert collapse(path) == label
        assert float(result.scores[i]) == pytest.approx(best, abs=1e-5)
        own_score = float(log_probs[i, torch.arange(len(path)), torch.tensor(path)].sum())
        assert own_score == pytest.approx(best, abs=1e-5)
        if len(argmaxes) == 1:
            assert path == argmaxes[0].tolist()


@pytest.mark.parametrize("seed", range(6))
def test_random_labels_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(12):
        frames, classes = int(rng.integers(1, 7)), int(rng.integers(2, 5))
        length = int(rng.integers(0, frames + 2))  # sometimes longer than the frames
        log_probs, targets = random_case(rng, frames, classes, length)
        check_against_brute_force(log_probs, targets, torch.tensor([length]))


def test_repeated_characters_need_a_blank_between_them() -> None:
    rng = np.random.default_rng(10)
    log_probs, _ = random_case(rng, 3, 3, 2)
    targets = torch.tensor([[2, 2]])
    # Three frames leave exactly one path for "aa": a, blank, a.
    assert ctc_best_path(log_probs, targets, torch.tensor([2])).tolist() == [[2, BLANK, 2]]
    # Two frames cannot hold it, even when the frames scream "a a".
    loud = torch.tensor([[[-9.0, -9.0, 0.0], [-9.0, -9.0, 0.0]]])
    assert not ctc_align(loud, targets, torch.tensor([2])).feasible.item()
    for seed in range(4):
        log_probs, _ = random_case(np.random.default_rng(seed), 6, 3, 3)
        check_against_brute_force(log_probs, torch.tensor([[1, 1, 1]]), torch.tensor([3]))


def test_empty_label_is_all_blank() -> None:
    log_probs, _ = random_case(np.random.default_rng(1), 5, 4, 0, batch=2)
    result = ctc_align(log_probs, torch.tensor([[3], [2]]), torch.tensor([0, 0]))
    assert result.paths.tolist() == [[BLANK] * 5] * 2
    torch.testing.assert_close(result.scores, log_probs[:, :, BLANK].sum(1))
    assert result.feasible.all()
    # A batch of only empty labels may come with zero-width targets.
    assert ctc_best_path(log_probs, torch.zeros(2, 0, dtype=torch.long), torch.tensor([0, 0])).tolist() == [[BLANK] * 5] * 2


def test_label_longer_than_the_frames_is_flagged_and_packed() -> None:
    log_probs, _ = random_case(np.random.default_rng(2), 3, 4, 4)
    targets = torch.tensor([[1, 2, 3, 1], [1, 1, 2, 0]])
    lengths = torch.tensor([4, 3])  # "1231" needs 4 frames, "112" needs 4 (a blank between the ones)
    result = ctc_align(log_probs.expand(2, -1, -1), targets, lengths)
    assert frames_needed(targets, lengths).tolist() == [4, 4]
    assert result.feasible.tolist() == [False, False]
    assert result.scores.tolist() == [float("-inf")] * 2
    assert result.paths.tolist() == [[1, 2, 3], [1, 1, 2]]


def test_mixed_lengths_in_one_batch_match_brute_force() -> None:
    rng = np.random.default_rng(7)
    log_probs, targets = random_case(rng, 6, 4, 5, batch=8)
    targets[3, :2] = 2  # a double among them
    lengths = torch.tensor([0, 1, 2, 3, 4, 5, 5, 3])
    check_against_brute_force(log_probs, targets, lengths)


def test_perfect_prediction_is_its_own_target() -> None:
    # A prediction that is exactly one valid path (other classes at probability 0, log -inf) must
    # get that path back as its aligned target: a correct prediction is at distance 0 from it.
    rng = np.random.default_rng(3)
    labels = ["hello", "a", "", "zz", "aabbccddeeff"]
    paths = torch.from_numpy(np.stack([ctc_path(label, FRAMES, rng) for label in labels]))
    predictions = torch.nn.functional.one_hot(paths, NUM_CLASSES).float()
    targets, lengths = encode_labels(labels)
    aligned = aligned_targets(predictions, targets, lengths, NUM_CLASSES)
    assert torch.equal(aligned, predictions)
    assert greedy_ctc_decode(aligned.argmax(-1)) == labels
    # Against another item's prediction every path crosses a frame of probability 0 (log -inf):
    # the labels still fit the frames, so they still get a valid path.
    swapped = ctc_align(predictions.roll(1, 0).log(), targets, lengths)
    assert swapped.feasible.all()
    assert greedy_ctc_decode(swapped.paths) == labels


def test_aligned_targets_read_probabilities_or_log_probabilities_without_gradient() -> None:
    rng = np.random.default_rng(4)
    labels = ["word", "ab", "", "0123456789ab", "mississippi"]
    targets, lengths = encode_labels(labels)
    logits = torch.from_numpy(rng.normal(0, 3, (len(labels), FRAMES, NUM_CLASSES))).float().requires_grad_(True)
    from_probs = aligned_targets(logits.softmax(-1), targets, lengths, NUM_CLASSES)
    from_log_probs = aligned_targets(logits.log_softmax(-1), targets, lengths, NUM_CLASSES)
    assert from_probs.shape == (len(labels), FRAMES, NUM_CLASSES) and from_probs.dtype == torch.float32
    assert not from_probs.requires_grad
    assert torch.equal(from_probs, from_log_probs)
    assert torch.all(from_probs.sum(-1) == 1)
    assert greedy_ctc_decode(from_probs.argmax(-1)) == labels


def test_task_shapes_beat_random_valid_paths() -> None:
    # The real task's shapes: far beyond brute force, so check that every path is valid and scores
    # at least as well as random valid paths of the same labels.
    rng = np.random.default_rng(5)
    labels = ["".join(rng.choice(list("abc"), size=int(rng.integers(0, 13)))) for _ in range(64)]
    targets, lengths = encode_labels(labels)
    log_probs = torch.from_numpy(rng.normal(0, 3, (64, FRAMES, NUM_CLASSES))).float().log_softmax(-1)
    result = ctc_align(log_probs, targets, lengths)
    assert result.feasible.all()
    assert greedy_ctc_decode(result.paths) == labels
    for _ in range(5):
        others = torch.from_numpy(np.stack([ctc_path(label, FRAMES, rng) for label in labels]))
        other_scores = log_probs.gather(2, others[..., None])[..., 0].sum(1)
        assert torch.all(result.scores >= other_scores - 1e-4)


def test_mismatched_lengths_are_named() -> None:
    with pytest.raises(ValueError, match="label lengths must lie in \\[0, 2\\]"):
        ctc_align(torch.zeros(1, 4, 3), torch.tensor([[1, 2]]), torch.tensor([3]))
