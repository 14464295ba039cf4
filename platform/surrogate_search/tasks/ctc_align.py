"""CTC forced alignment: the single most likely frame path of a known label under a prediction.

A CTC model spreads a label over frames (``"-hh-e-ll-ll-oo"`` collapses to ``"hello"``). A surrogate
that compares a prediction with its label must see the label in that frame layout: the label packed
into the first frames is far from every correct prediction. :func:`aligned_targets` gives the label
as the one-hot of its Viterbi path under the prediction, in the prediction's own frames.

Paths follow the usual CTC rules over the extended label ``blank, l1, blank, l2, ..., lL, blank``:
at each frame a path stays on its state, advances by one, or skips the blank between two
*different* non-blank labels; it starts in one of the first two states and ends in one of the last
two. A label of length ``L`` with ``R`` equal neighbours needs ``L + R`` frames.

Example::

    log_probs = model(images).log_softmax(-1)              # (B, T, C)
    paths = ctc_best_path(log_probs, targets, lengths)     # (B, T) class per frame
    one_hot = aligned_targets(log_probs, targets, lengths, num_classes=C)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# A log-probability of -inf (a probability that underflowed to 0) would make a feasible label look
# impossible. Clamping to a large finite floor keeps "impossible frame" apart from "no path at all"
# (which stays -inf) while any path through such a frame still loses to one that avoids it.
_LOG_FLOOR = -1e4
_NO_PATH = float("-inf")


@dataclass(frozen=True)
class CTCAlignment:
    """The best path of each item, its total log-probability and whether the label fit at all.

    ``paths``: ``(B, T)`` class per frame. ``scores``: ``(B,)`` sum of the path's per-frame
    log-probabilities, each counted as at least -10,000 (``-inf`` only where no path exists).
    ``feasible``: ``(B,)`` False where the label needs more frames than there are (see
    :func:`ctc_align` for the path given then)."""

    paths: torch.Tensor
    scores: torch.Tensor
    feasible: torch.Tensor


def frames_needed(targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Fewest frames a CTC path of each label takes: its length plus one blank per equal pair of
    neighbours (``"aa"`` needs ``a, blank, a``)."""
    positions = torch.arange(targets.shape[1], device=targets.device)
    inside = positions[None, 1:] < lengths[:, None]
    repeats = ((targets[:, 1:] == targets[:, :-1]) & inside).sum(1)
    return lengths + repeats


def _extended_labels(targets: torch.Tensor, lengths: torch.Tensor, blank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ext, valid, can_skip)``, each ``(B, 2 * Lmax + 1)``: the blank-interleaved label, which of
    its states exist for each item, and which states may be entered from two states back."""
    batch, max_len = targets.shape
    states = 2 * max_len + 1
    ext = torch.full((batch, states), blank, dtype=torch.long, device=targets.device)
    ext[:, 1::2] = targets
    index = torch.arange(states, device=targets.device)
    valid = index[None, :] < (2 * lengths + 1)[:, None]
    can_skip = torch.zeros_like(valid)
    can_skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    return ext, valid, can_skip


def _shift(values: torch.Tensor, by: int) -> torch.Tensor:
    """``values`` moved ``by`` states to the right along the last dim, ``-inf`` shifted in."""
    return F.pad(values[:, :-by], (by, 0), value=_NO_PATH)


def _packed_paths(targets: torch.Tensor, lengths: torch.Tensor, frames: int, blank: int) -> torch.Tensor:
    """The label's characters in the first frames, then blanks (cut at ``frames``)."""
    packed = torch.full((targets.shape[0], frames), blank, dtype=torch.long, device=targets.device)
    width = min(frames, targets.shape[1])
    inside = torch.arange(width, device=targets.device)[None, :] < lengths[:, None]
    packed[:, :width] = torch.where(inside, targets[:, :width], blank)
    return packed


@torch.no_grad()
def ctc_align(log_probs: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> CTCAlignment:
    """Viterbi alignment of each label to its prediction.

    Args:
        log_probs: ``(B, T, C)`` per-frame log-probabilities (log-softmax of the model's logits).
        targets: ``(B, L)`` label class indices, padded past each label's length with anything.
        lengths: ``(B,)`` label lengths; 0 is an empty label.
        blank: the CTC blank class.

    Returns the best path per item (see :class:`CTCAlignment`). Defined edge cases:

    - an empty label: the all-blank path (the only one that collapses to ``""``);
    - repeated characters: the path puts at least one blank between them;
    - a label that needs more frames than ``T`` (:func:`frames_needed`): no CTC path exists. The
      item gets its characters packed into the first frames and blanks after, cut at ``T`` frames
      (the layout the task used before alignment), ``scores = -inf`` and ``feasible = False``.

    Ties between equally likely paths are broken the same way every time: a path ends on the
    trailing blank rather than the last character, and, tracing back from the end, stays on a state
    rather than advancing, and advances rather than skipping a blank.
    """
    batch, frames, _ = log_probs.shape
    if targets.shape[0] != batch or lengths.shape != (batch,):
        raise ValueError(f"ctc_align: log_probs {tuple(log_probs.shape)}, targets {tuple(targets.shape)} and lengths "
                         f"{tuple(lengths.shape)} must share the batch size")
    if len(lengths) and (int(lengths.min()) < 0 or int(lengths.max()) > targets.shape[1]):
        raise ValueError(f"ctc_align: label lengths must lie in [0, {targets.shape[1]}] (the targets' width), "
                         f"got {lengths.tolist()}")
    lengths = lengths.to(device=log_probs.device, dtype=torch.long)
    targets = targets.to(device=log_probs.device, dtype=torch.long)
    if targets.shape[1] == 0:  # only empty labels: one state, the blank
        targets = targets.new_full((batch, 1), blank)
    ext, valid, can_skip = _extended_labels(targets, lengths, blank)
    # Per-frame score of each state's class: (T, B, S). float64 keeps long sums exact enough to
    # compare paths that differ in one frame.
    emissions = log_probs.detach().double().clamp_min(_LOG_FLOOR)
    emissions = emissions.gather(2, ext[:, None, :].expand(-1, frames, -1)).transpose(0, 1)

    score = torch.full(valid.shape, _NO_PATH, dtype=torch.float64, device=log_probs.device)
    score[:, :2] = emissions[0, :, :2]  # a path starts on the leading blank or the first character
    score = score.masked_fill(~valid, _NO_PATH)
    pointers = torch.zeros((frames, *valid.shape), dtype=torch.uint8, device=log_probs.device)
    for t in range(1, frames):
        # Predecessors in pointer order: 0 = the same state, 1 = one back, 2 = two back (a skip).
        skip = _shift(score, 2).masked_fill(~can_skip, _NO_PATH)
        best, pointers[t] = torch.stack((score, _shift(score, 1), skip), -1).max(-1)
        score = (best + emissions[t]).masked_fill(~valid, _NO_PATH)

    # A path ends on the last character or on the blank after it.
    last = 2 * lengths
    before_last = (last - 1).clamp_min(0)
    end_scores = torch.stack((score.gather(1, last[:, None])[:, 0],
                              score.gather(1, before_last[:, None])[:, 0].masked_fill(lengths == 0, _NO_PATH)), 1)
    scores, ends_early = end_scores.max(1)
    state = last - ends_early

    paths = torch.empty((batch, frames), dtype=torch.long, device=log_probs.device)
    for t in range(frames - 1, -1, -1):
        paths[:, t] = ext.gather(1, state[:, None])[:, 0]
        state = state - pointers[t].gather(1, state[:, None])[:, 0].long()

    feasible = torch.isfinite(scores)
    paths = torch.where(feasible[:, None], paths, _packed_paths(targets, lengths, frames, blank))
    return CTCAlignment(paths=paths, scores=scores.to(log_probs.dtype), feasible=feasible)


def ctc_best_path(log_probs: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> torch.Tensor:
    """``(B, T)`` class per frame: the most likely CTC path of each label under ``log_probs``
    (``(B, T, C)``). Edge cases as in :func:`ctc_align`; use that to see which labels did not fit."""
    return ctc_align(log_probs, targets, lengths, blank).paths


def _as_log_probs(predictions: torch.Tensor) -> torch.Tensor:
    # Probabilities are >= 0 with a positive maximum in each frame; log-probabilities are <= 0.
    if predictions.numel() and float(predictions.max()) > 0:
        return predictions.clamp_min(torch.finfo(predictions.dtype).tiny).log()
    return predictions


@torch.no_grad()
def aligned_targets(predictions: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor, num_classes: int,
                    blank: int = 0) -> torch.Tensor:
    """Each label as a ``(T, num_classes)`` one-hot frame sequence along its best path under the
    prediction: the surrogate's target in the prediction's own frame layout.

    ``predictions`` is ``(B, T, C)``, either per-frame probabilities (the task's ``predict``) or
    log-probabilities; it is read detached, so no gradient flows into the target. Labels that do not
    fit in ``T`` frames get their characters packed into the first frames (see :func:`ctc_align`).
    Returns a float ``(B, T, num_classes)`` tensor on the predictions' device.
    """
    paths = ctc_best_path(_as_log_probs(predictions.detach()), targets, lengths, blank)
    return F.one_hot(paths, num_classes).to(predictions.dtype if predictions.is_floating_point() else torch.float32)
