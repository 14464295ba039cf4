"""Small helpers shared across the library."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import yaml


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a torch generator seeded the same way for data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def update_digest(digest: Any, name: str, tensor: torch.Tensor, rows: torch.Tensor | None = None) -> None:
    """Add a tensor to a ``hashlib`` digest: its name, type and shape, then its values (only those
    of ``rows``, indices along the first dimension, when given)."""
    digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
    values = tensor if rows is None else tensor[rows.to(tensor.device)]
    digest.update(values.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``"auto"``/None picks CUDA when there is one, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def is_better(value: float, best: float | None, higher_is_better: bool, min_delta: float = 0.0) -> bool:
    if best is None:
        return True
    return value > best + min_delta if higher_is_better else value < best - min_delta


MAX_STEP_SIZE = 1.0
"""The largest learning rate a config accepts. Adam moves every weight by about the learning rate
per update, so a larger one is a typo (``1e30`` for ``1e-3``), and it would diverge at once."""


def check_range(section: str, options: Any, *, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = (),
                unit: tuple[str, ...] = (), step_size: tuple[str, ...] = ()) -> None:
    """Fail with the dotted key, the value and the allowed range when an option is out of range
    (NaN never passes). ``step_size``: a learning rate, in (0, MAX_STEP_SIZE]."""
    for names, ok, what in ((positive, lambda v: v > 0, "> 0"), (non_negative, lambda v: v >= 0, ">= 0"),
                            (unit, lambda v: 0 <= v <= 1, "in [0, 1]"),
                            (step_size, lambda v: 0 < v <= MAX_STEP_SIZE,
                             f"in (0, {MAX_STEP_SIZE:g}] (Adam's step size; typical values 1e-5 to 1e-2)")):
        for name in names:
            value = getattr(options, name)
            if not ok(value) or value != value:
                key = f"{section}.{name}" if section else name
                if what == "> 0" and isinstance(value, int) and not isinstance(value, bool):
                    what = "an integer >= 1"
                raise ValueError(f"post-tuning config: {key} must be {what}, got {value!r}")


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: ``{"surrogate": {"width": 8}}`` -> ``{"surrogate.width": 8}``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def parse_assignments(pairs: Sequence[str]) -> dict[str, Any]:
    """``["train_size=2000", "dataset=digits"]`` -> ``{"train_size": 2000, "dataset": "digits"}`` (YAML-typed)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        parsed = yaml.safe_load(value)
        # YAML 1.1 reads `3e-5` (no dot) as a string; on a command line it means a number.
        options[key] = float(parsed) if isinstance(parsed, str) and _SCIENTIFIC.match(parsed) else parsed
    return options
