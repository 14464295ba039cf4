"""Minimum expected edit distance (MWER-style): train on the metric itself through sampled outputs.

Edit distance has no gradient, but the probability of a sampled output does. For each item, draw
``N`` frame paths from the model's per-frame distributions, decode them, and measure each one's
edit distance to the label. The loss is the edit distance expected under the model's probabilities
renormalised over those ``N`` samples, minus the samples' mean edit distance::

    w_n  = softmax_n(log P(path_n))                 (path log-probability: sum over frames)
    loss = mean over items of  sum_n w_n * (ED_n - mean_m ED_m)

Its gradient raises the probability of samples with fewer errors than the weighted average and
lowers the others. Subtracting the mean leaves the gradient unchanged (the weights sum to 1); it
centres the value at 0 so that it reads as "how much worse than a typical sample". When all samples
of an item have the same edit distance (all correct, say) the item contributes no gradient. That
includes a model so sure of a wrong output that all ``N`` samples repeat it: nothing is learned from
such an item, which is why MWER training keeps a small proxy-loss term beside it.

This is the N-best form of minimum word error rate training (Prabhavalkar et al., ICASSP 2018,
which reports up to 8.2% relative WER reduction), with sampled paths in place of a beam. Samples are
counted as drawn: a path drawn twice weighs twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import editdistance
import torch


def sample_paths(log_probs: torch.Tensor, n_samples: int, generator: torch.Generator) -> torch.Tensor:
    """``(B, n_samples, T)`` frame paths, each frame's class drawn independently from
    ``log_probs.exp()`` (``(B, T, C)``). Drawn on the generator's device, returned on the inputs'."""
    batch, frames, classes = log_probs.shape
    probs = log_probs.detach().float().exp().to(generator.device)
    draws = torch.multinomial(probs.reshape(-1, classes), n_samples, replacement=True, generator=generator)
    return draws.view(batch, frames, n_samples).transpose(1, 2).to(log_probs.device)


def expected_edit_distance_loss(log_probs: torch.Tensor, labels: Sequence[str],
                                decode: Callable[[torch.Tensor], list[str]], n_samples: int,
                                generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """Sampled minimum-expected-edit-distance loss of a batch, and its statistics.

    Args:
        log_probs: ``(B, T, C)`` per-frame log-probabilities with gradient (``outputs.log_softmax(-1)``).
        labels: the ``B`` label strings.
        decode: ``(N, T)`` class per frame -> ``N`` strings (the task's greedy CTC collapse, or a
            per-position argmax decoder for position-aligned models).
        n_samples: paths drawn per item (at least 2: one sample has no alternative to compare with).
        generator: seeds the draws, so that a run repeats exactly.

    Returns ``(loss, stats)``: the loss is a scalar (mean over items, in characters); ``stats`` has
    ``mwer/sampled_edit_distance`` (mean edit distance of all samples) and
    ``mwer/expected_edit_distance`` (mean over items of the weighted expectation the loss
    minimises), both in characters per item.

    Example::

        loss, stats = expected_edit_distance_loss(outputs.log_softmax(-1), batch.labels, greedy_ctc_decode,
                                                  n_samples=8, generator=torch.Generator().manual_seed(0))
    """
    batch, frames, _ = log_probs.shape
    if len(labels) != batch:
        raise ValueError(f"expected_edit_distance_loss: {batch} predictions but {len(labels)} labels")
    if n_samples < 2:
        raise ValueError(f"expected_edit_distance_loss: n_samples must be at least 2, got {n_samples}")
    with torch.no_grad():
        paths = sample_paths(log_probs, n_samples, generator)                   # (B, N, T)
        decoded = decode(paths.reshape(batch * n_samples, frames))
    distances = torch.tensor([editdistance.eval(text, labels[i // n_samples]) for i, text in enumerate(decoded)],
                             dtype=log_probs.dtype, device=log_probs.device).view(batch, n_samples)
    path_log_probs = log_probs.gather(2, paths.transpose(1, 2)).sum(1)        # (B, N), with gradient
    weights = path_log_probs.softmax(-1)
    expected = (weights * distances).sum(-1)                                    # (B,)
    loss = (expected - distances.mean(-1)).mean()
    return loss, {"mwer/sampled_edit_distance": float(distances.mean()),
                  "mwer/expected_edit_distance": float(expected.detach().mean())}
