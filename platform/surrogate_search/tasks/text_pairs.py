"""Global (model-free) prediction/label pairs for text: random strings, random edits of them, and
per-frame (or per-position) probability sequences that the model's decoder reads back as the edited
string."""

from __future__ import annotations

import numpy as np
import torch

from surrogate_search.tasks.text_render import CHARSET, MAX_LABEL_LENGTH


def random_edit(label: str, rng: np.random.Generator) -> str:
    """``label`` after a random number of substitutions, insertions and deletions; sometimes an
    unrelated string, so that pairs span edit distances from 0 to the label's length and beyond."""
    if rng.random() < 0.1:
        return "".join(rng.choice(list(CHARSET), size=int(rng.integers(0, MAX_LABEL_LENGTH + 1))))
    chars = list(label)
    for _ in range(min(int(rng.exponential(1.5)), MAX_LABEL_LENGTH)):
        op = rng.integers(3)
        pos = int(rng.integers(len(chars) + (op == 1))) if chars or op == 1 else 0
        if op == 0 and chars:
            chars[pos] = CHARSET[int(rng.integers(len(CHARSET)))]
        elif op == 1 and len(chars) < MAX_LABEL_LENGTH:
            chars.insert(pos, CHARSET[int(rng.integers(len(CHARSET)))])
        elif op == 2 and chars:
            del chars[pos]
    return "".join(chars)


def ctc_path(text: str, frames: int, rng: np.random.Generator, blank: int = 0) -> np.ndarray:
    """A random frame-level class path that best-path decoding collapses to ``text``.

    Each character gets at least one frame, equal neighbours are split by a blank, and the spare
    frames become blanks or repeats at random places."""
    classes = [CHARSET.index(c) + 1 for c in text]
    tokens: list[int] = []
    for i, c in enumerate(classes):
        if i and classes[i - 1] == c:
            tokens.append(blank)
        tokens.append(c)
    if len(tokens) > frames:  # cannot happen for labels up to MAX_LABEL_LENGTH with 24 frames
        raise ValueError(f"{text!r} needs {len(tokens)} frames, only {frames} available")
    durations = np.ones(len(tokens), dtype=int)
    spare = frames - len(tokens)
    lead = trail = 0
    if spare:
        # Spread spare frames over: leading blanks, each token (repeat), trailing blanks.
        shares = rng.multinomial(spare, rng.dirichlet(np.ones(len(tokens) + 2)))
        lead, trail = int(shares[0]), int(shares[-1])
        durations += shares[1:-1]
    path = [blank] * lead + [t for t, d in zip(tokens, durations) for _ in range(d)] + [blank] * trail
    return np.asarray(path, dtype=np.int64)


def position_path(text: str, positions: int, blank: int = 0) -> np.ndarray:
    """``text`` as one class per output position (a position-aligned decoder's layout): its
    characters, then ``blank`` (class 0: no character) up to ``positions``."""
    if len(text) > positions:
        raise ValueError(f"{text!r} has {len(text)} characters, only {positions} positions available")
    return np.asarray([CHARSET.index(c) + 1 for c in text] + [blank] * (positions - len(text)), dtype=np.int64)


def soft_frames(paths: np.ndarray, num_classes: int, rng: np.random.Generator) -> torch.Tensor:
    """Per-frame probabilities peaked on ``paths`` (N, T): the peak takes a random share of the mass
    (a different confidence per sequence), Dirichlet noise spreads the rest over the other classes."""
    n, t = paths.shape
    confidence_floor = rng.uniform(0.25, 0.95, size=(n, 1))
    peak = rng.uniform(confidence_floor, 1.0, size=(n, t))
    rest = rng.dirichlet(np.full(num_classes - 1, 0.3), size=(n, t))
    probs = np.empty((n, t, num_classes))
    rows, cols = np.meshgrid(np.arange(n), np.arange(t), indexing="ij")
    others = (np.arange(num_classes - 1)[None, None, :] + (np.arange(num_classes - 1)[None, None, :] >= paths[..., None]))
    probs[rows[..., None], cols[..., None], others] = rest * (1 - peak)[..., None]
    probs[rows, cols, paths] = peak
    return torch.tensor(probs, dtype=torch.float32)
