"""The sampled minimum-expected-edit-distance loss, on free per-frame logits small enough to
compute the exact expected edit distance by enumerating every frame path."""

from __future__ import annotations

import itertools

import editdistance
import pytest
import torch

from surrogate_search.surrogates.expected_edit_distance import expected_edit_distance_loss, sample_paths
from surrogate_search.tasks.synthetic_text import greedy_ctc_decode, position_decode

FRAMES, CLASSES = 5, 4  # blank + the characters "0", "1", "2"
LABELS = ["01", "2", "00", ""]


def exact_expected_edit_distance(log_probs: torch.Tensor, labels: list[str], decode=greedy_ctc_decode) -> float:
    """Mean over items of sum over all CLASSES**FRAMES paths of P(path) * ED(decode(path), label)."""
    paths = torch.tensor(list(itertools.product(range(CLASSES), repeat=FRAMES)))
    decoded = decode(paths)
    total = 0.0
    for item, label in enumerate(labels):
        probs = log_probs[item].detach().gather(1, paths.T).sum(0).exp()
        total += float((probs * torch.tensor([float(editdistance.eval(d, label)) for d in decoded])).sum())
    return total / len(labels)


def greedy_edit_distance(logits: torch.Tensor, decode=greedy_ctc_decode) -> int:
    return sum(editdistance.eval(text, label) for text, label in zip(decode(logits.argmax(-1)), LABELS))


def train(steps: int, seed: int = 0, decode=greedy_ctc_decode) -> tuple[tuple[float, int], tuple[float, int]]:
    """(exact expected, greedy) edit distance of free logits before and after ``steps`` Adam steps."""
    torch.manual_seed(seed)
    logits = torch.randn(len(LABELS), FRAMES, CLASSES).requires_grad_(True)

    def measure() -> tuple[float, int]:
        return exact_expected_edit_distance(logits.log_softmax(-1), LABELS, decode), greedy_edit_distance(logits, decode)

    before = measure()
    optimizer = torch.optim.Adam([logits], lr=0.1)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        loss, _ = expected_edit_distance_loss(logits.log_softmax(-1), LABELS, decode, 8, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return before, measure()


@pytest.mark.parametrize("seed, decode", [(0, greedy_ctc_decode), (1, greedy_ctc_decode), (2, greedy_ctc_decode),
                                          (0, position_decode)], ids=["ctc-0", "ctc-1", "ctc-2", "positions-0"])
def test_a_few_dozen_steps_lower_the_expected_edit_distance(seed: int, decode) -> None:
    # CTC frames (greedy collapse) and position-aligned outputs (characters up to the first 0).
    (expected_before, greedy_before), (expected_after, greedy_after) = train(steps=40, seed=seed, decode=decode)
    assert expected_before > 1.5  # random logits: mostly wrong
    assert expected_after < 0.6 * expected_before
    assert greedy_after < greedy_before


def test_all_correct_samples_give_zero_loss_and_zero_gradient() -> None:
    # Every frame all but certain of a path that decodes to its label: every sample is correct.
    paths = torch.tensor([[1, 1, 0, 2, 0], [3, 3, 3, 0, 0], [1, 0, 0, 1, 1], [0, 0, 0, 0, 0]])
    assert greedy_ctc_decode(paths) == LABELS
    logits = (40.0 * torch.nn.functional.one_hot(paths, CLASSES).float()).requires_grad_(True)
    loss, stats = expected_edit_distance_loss(logits.log_softmax(-1), LABELS, greedy_ctc_decode, 16,
                                              torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(logits.grad) == 0
    assert stats == {"mwer/sampled_edit_distance": 0.0, "mwer/expected_edit_distance": 0.0}


def test_samples_equally_wrong_give_no_gradient() -> None:
    # One character off everywhere: no sample is better than another, so nothing to learn from.
    logits = (40.0 * torch.nn.functional.one_hot(torch.tensor([[3, 0, 0, 0, 0]]), CLASSES).float()).requires_grad_(True)
    loss, stats = expected_edit_distance_loss(logits.log_softmax(-1), ["1"], greedy_ctc_decode, 8,
                                              torch.Generator().manual_seed(0))
    loss.backward()
    assert stats["mwer/sampled_edit_distance"] == 1.0
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(logits.grad, torch.zeros_like(logits), atol=1e-6, rtol=0)


def test_value_and_statistics_follow_the_definition() -> None:
    torch.manual_seed(3)
    log_probs = torch.randn(len(LABELS), FRAMES, CLASSES).log_softmax(-1)
    loss, stats = expected_edit_distance_loss(log_probs, LABELS, greedy_ctc_decode, 6, torch.Generator().manual_seed(5))
    # The same draws, by hand.
    paths = sample_paths(log_probs, 6, torch.Generator().manual_seed(5))
    distances = torch.tensor([[float(editdistance.eval(text, label)) for text in greedy_ctc_decode(item)]
                              for item, label in zip(paths, LABELS)])
    weights = log_probs.gather(2, paths.transpose(1, 2)).sum(1).softmax(-1)
    expected = (weights * distances).sum(-1)
    assert float(loss) == pytest.approx(float((expected - distances.mean(-1)).mean()), abs=1e-6)
    assert stats["mwer/sampled_edit_distance"] == pytest.approx(float(distances.mean()))
    assert stats["mwer/expected_edit_distance"] == pytest.approx(float(expected.mean()))


def test_sampling_is_seeded_and_follows_the_probabilities() -> None:
    log_probs = torch.tensor([[[0.7, 0.2, 0.1, 0.0]] * FRAMES]).clamp_min(1e-12).log()
    a = sample_paths(log_probs, 4000, torch.Generator().manual_seed(1))
    b = sample_paths(log_probs, 4000, torch.Generator().manual_seed(1))
    c = sample_paths(log_probs, 4000, torch.Generator().manual_seed(2))
    assert a.shape == (1, 4000, FRAMES)
    assert torch.equal(a, b) and not torch.equal(a, c)
    frequencies = torch.bincount(a.flatten(), minlength=CLASSES).float() / a.numel()
    torch.testing.assert_close(frequencies, torch.tensor([0.7, 0.2, 0.1, 0.0]), atol=0.02, rtol=0)


def test_bad_arguments_are_named() -> None:
    log_probs = torch.zeros(2, FRAMES, CLASSES)
    with pytest.raises(ValueError, match="2 predictions but 1 labels"):
        expected_edit_distance_loss(log_probs, ["a"], greedy_ctc_decode, 4, torch.Generator())
    with pytest.raises(ValueError, match="n_samples must be at least 2, got 1"):
        expected_edit_distance_loss(log_probs, ["a", "b"], greedy_ctc_decode, 1, torch.Generator())
