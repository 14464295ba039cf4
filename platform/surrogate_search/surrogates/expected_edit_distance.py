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
from dataclasses import dataclass
from typing import Any

import editdistance
import torch

from surrogate_search.surrogates.base import PostTuneLoss, register_loss
from surrogate_search.tasks import Split, Task
from surrogate_search.utils import check_range


def sample_paths(log_probs: torch.Tensor, n_samples: int, generator: torch.Generator) -> torch.Tensor:
    """``(B, n_samples, T)`` frame paths, each frame's class drawn independently from
    ``log_probs.exp()`` (``(B, T, C)``). Drawn on the generator's device, returned on the inputs'."""
    batch, frames, classes = log_probs.shape
    probs = log_probs.detach().float().exp().to(generator.device)
    draws = torch.multinomial(probs.reshape(-1, classes), n_samples, replacement=True, generator=generator)
    return draws.view(batch, frames, n_samples).transpose(1, 2).to(log_probs.device)


def edit_distances(texts: Sequence[str], labels: Sequence[str]) -> list[float]:
    return [float(editdistance.eval(text, label)) for text, label in zip(texts, labels)]


def expected_edit_distance_loss(log_probs: torch.Tensor, labels: Sequence[Any],
                                decode: Callable[[torch.Tensor], list[Any]], n_samples: int,
                                generator: torch.Generator,
                                errors: Callable[[Sequence[Any], Sequence[Any]], list[float]] = edit_distances,
                                ) -> tuple[torch.Tensor, dict[str, float]]:
    """Sampled minimum-expected-edit-distance loss of a batch, and its statistics.

    Args:
        log_probs: ``(B, T, C)`` per-frame log-probabilities with gradient (``outputs.log_softmax(-1)``).
        labels: the ``B`` label strings.
        decode: ``(N, T)`` class per frame -> ``N`` strings (the task's greedy CTC collapse, or a
            per-position argmax decoder for position-aligned models).
        n_samples: paths drawn per item (at least 2: one sample has no alternative to compare with).
        generator: seeds the draws, so that a run repeats exactly.
        errors: decoded outputs and their labels -> one error each (lower is better); edit
            distance by default, the task's own metric when a loss passes it.

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
    repeated = [labels[i // n_samples] for i in range(batch * n_samples)]
    distances = torch.tensor(errors(decoded, repeated), dtype=log_probs.dtype,
                             device=log_probs.device).view(batch, n_samples)
    path_log_probs = log_probs.gather(2, paths.transpose(1, 2)).sum(1)        # (B, N), with gradient
    weights = path_log_probs.softmax(-1)
    expected = (weights * distances).sum(-1)                                    # (B,)
    loss = (expected - distances.mean(-1)).mean()
    return loss, {"mwer/sampled_edit_distance": float(distances.mean()),
                  "mwer/expected_edit_distance": float(expected.detach().mean())}


@dataclass
class ExpectedEditDistanceOptions:
    samples: int = 8
    """Outputs sampled per item (N); the expectation is taken over them."""
    proxy_weight: float = 1.0
    """Weight of the task's proxy loss (CTC) added to the expected error, as MWER training keeps
    cross-entropy beside it: an item whose samples all agree gives no gradient of its own."""

    def validate(self) -> None:
        check_range("expected_edit_distance", self, non_negative=("proxy_weight",))
        if self.samples < 2:
            raise ValueError(f"post-tuning config: expected_edit_distance.samples must be >= 2, got {self.samples!r}")


@register_loss("expected_edit_distance")
class ExpectedEditDistance(PostTuneLoss):
    """Minimum expected metric error over sampled outputs (MWER-style), plus a weighted proxy term:
    the direct-metric baseline a learned surrogate of a sequence metric has to beat."""

    Options = ExpectedEditDistanceOptions

    def __init__(self, task: Task, config) -> None:  # type: ignore[no-untyped-def]
        super().__init__(task, config)
        self.generator = torch.Generator().manual_seed(config.seed * 65537 + 11)

    @classmethod
    def supports(cls, task: Task) -> bool:
        return type(task).decode_classes is not Task.decode_classes and task.metric.decomposable

    def errors(self, outputs: Sequence[Any], labels: Sequence[Any]) -> list[float]:
        return [self.task.error(float(v)) for v in self.task.metric.per_sample(outputs, labels)]

    def model_loss(self, outputs: torch.Tensor, batch: Split) -> tuple[torch.Tensor, dict[str, float]]:
        log_probs = outputs.float().log_softmax(-1)
        loss, stats = expected_edit_distance_loss(log_probs, batch.labels, self.task.decode_classes,
                                                  self.options.samples, self.generator, self.errors)
        if self.options.proxy_weight:
            proxy = self.task.proxy_loss(outputs, batch)
            loss = loss + self.options.proxy_weight * proxy
            stats["proxy_loss"] = float(proxy.detach())
        return loss, stats
