"""``synthetic_text``: rendered word images, a CRNN trained with CTC, judged by edit distance."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from surrogate_search.cache import default_cache_dir
from surrogate_search.tasks.base import Split, Splits, Task, TrainDefaults, register_task
from surrogate_search.tasks.crnn import CRNN
from surrogate_search.tasks.text_pairs import ctc_path, random_edit, soft_frames
from surrogate_search.tasks.text_render import CHARSET, IMAGE_WIDTH, MAX_LABEL_LENGTH, RenderOptions, render_split, sample_label

log = logging.getLogger(__name__)

BLANK = 0
NUM_CLASSES = len(CHARSET) + 1
FRAMES = IMAGE_WIDTH // 4  # the CRNN downsamples width 4x
_CHAR_TO_INDEX = {c: i + 1 for i, c in enumerate(CHARSET)}


def encode_labels(labels: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels as a ``(N, MAX_LABEL_LENGTH)`` index tensor padded with the blank, and their lengths."""
    targets = torch.zeros(len(labels), MAX_LABEL_LENGTH, dtype=torch.long)
    lengths = torch.zeros(len(labels), dtype=torch.long)
    for i, label in enumerate(labels):
        unknown = set(label) - set(_CHAR_TO_INDEX)
        if unknown or len(label) > MAX_LABEL_LENGTH:
            raise ValueError(f"label {label!r} has characters outside {CHARSET!r} or more than {MAX_LABEL_LENGTH} of them")
        targets[i, : len(label)] = torch.tensor([_CHAR_TO_INDEX[c] for c in label], dtype=torch.long)
        lengths[i] = len(label)
    return targets, lengths


def greedy_ctc_decode(frame_classes: torch.Tensor) -> list[str]:
    """Best-path decoding of ``(B, T)`` per-frame class indices: merge repeats, drop blanks."""
    frames = frame_classes.detach().cpu()
    keep = torch.ones_like(frames, dtype=torch.bool)
    keep[:, 1:] = frames[:, 1:] != frames[:, :-1]
    keep &= frames != BLANK
    return ["".join(CHARSET[c - 1] for c in row[mask].tolist()) for row, mask in zip(frames, keep)]


@register_task("synthetic_text")
class SyntheticText(Task):
    """Scene-text-like word recognition on rendered images (24 x 96 grey), 36 case-folded characters.

    Options: ``train_size``, ``val_size``, ``test_size`` (images per split) and any field of
    :class:`~surrogate_search.tasks.text_render.RenderOptions`.
    """

    name = "synthetic_text"
    metric_name = "edit_distance"
    report_metrics = ("normalized_edit_distance", "char_error_rate", "word_accuracy")
    surrogate_shape = (FRAMES, NUM_CLASSES)

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        sizes = {"train_size": 10000, "val_size": 1000, "test_size": 2000}
        render = {f.name for f in fields(RenderOptions)}
        unknown = set(options) - set(sizes) - render
        if unknown:
            raise ValueError(f"task 'synthetic_text': unknown option(s) {sorted(unknown)}; "
                             f"known: {sorted(sizes) + sorted(render)}")
        merged = {**sizes, **asdict(RenderOptions()), **options}
        for key in sizes:
            if not isinstance(merged[key], int) or merged[key] < 1:
                raise ValueError(f"task 'synthetic_text': {key} must be a positive integer, got {merged[key]!r}")
        return merged

    def _render_options(self) -> RenderOptions:
        return RenderOptions(**{f.name: self.options[f.name] for f in fields(RenderOptions)})

    def load_splits(self, cache_dir: str | Path | None = None) -> Splits:
        """Rendered once, then read from ``cache_dir`` (default: :func:`default_cache_dir`, resolved
        in this process, so a Ray worker uses its own node's cache)."""
        cache_dir = cache_dir or default_cache_dir()
        return Splits(*(self._load_split(name, cache_dir) for name in ("train", "val", "test")))

    def _load_split(self, split: str, cache_dir: str | Path | None) -> Split:
        size = self.options[f"{split}_size"]
        key = json.dumps({"seed": self.seed, "split": split, "size": size, **asdict(self._render_options()), "v": 1}, sort_keys=True)
        path = Path(cache_dir) / f"synthetic_text-{split}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"
        if path.exists():
            with np.load(path) as cached:
                images, labels = cached["images"], [str(s) for s in cached["labels"]]
        else:
            log.info("rendering %d %s images (seed %d)...", size, split, self.seed)
            images, labels = render_split(self.seed, split, size, self._render_options())
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")  # concurrent renderers write apart
            np.savez_compressed(tmp, images=images, labels=np.array(labels))
            tmp.replace(path)  # atomic: a concurrent reader never sees half a file
        targets, lengths = encode_labels(labels)
        return Split({"images": torch.from_numpy(images).unsqueeze(1), "targets": targets, "target_lengths": lengths}, labels)

    def default_model_options(self) -> dict[str, Any]:
        return {"channels": 16, "hidden": 96, "lstm_layers": 1}

    def build_model(self, **model_options: Any) -> nn.Module:
        return CRNN(NUM_CLASSES, **{**self.default_model_options(), **model_options})

    def train_defaults(self) -> TrainDefaults:
        return TrainDefaults(batch_size=64, lr=1e-3, max_epochs=60, patience=4)

    def forward(self, model: nn.Module, batch: Split) -> torch.Tensor:
        images = batch.tensors["images"].float().div_(127.5).sub_(1.0)
        return model(images)

    def proxy_loss(self, outputs: torch.Tensor, batch: Split) -> torch.Tensor:
        log_probs = outputs.float().log_softmax(-1).transpose(0, 1)  # (T, B, C) as CTC wants
        input_lengths = torch.full((outputs.shape[0],), outputs.shape[1], dtype=torch.long)
        return F.ctc_loss(log_probs, batch.tensors["targets"], input_lengths, batch.tensors["target_lengths"],
                          blank=BLANK, reduction="mean", zero_infinity=True)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.softmax(-1)

    def decode(self, predictions: torch.Tensor) -> list[str]:
        return greedy_ctc_decode(predictions.argmax(-1))

    # --- what a learned surrogate sees -------------------------------------------------------------
    def surrogate_targets(self, batch: Split) -> torch.Tensor:
        """Each label as a ``(FRAMES, NUM_CLASSES)`` one-hot sequence: its characters, then blanks."""
        targets = torch.full((len(batch), FRAMES), BLANK, dtype=torch.long, device=batch.tensors["targets"].device)
        targets[:, :MAX_LABEL_LENGTH] = batch.tensors["targets"]
        return F.one_hot(targets, NUM_CLASSES).float()

    def random_pairs(self, n_items: int, set_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=generator)))
        labels = [sample_label(rng, self._render_options()) for _ in range(n_items)]
        paths = np.stack([ctc_path(random_edit(label, rng), FRAMES, rng, BLANK) for label in labels])
        targets, lengths = encode_labels(labels)
        batch = Split({"targets": targets, "target_lengths": lengths}, labels)
        return soft_frames(paths, NUM_CLASSES, rng), self.surrogate_targets(batch), labels

    def perturb(self, outputs: torch.Tensor, noise: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # Gumbel noise at scale 1 makes the best path a sample from the model's own distribution:
        # the errors a slightly different model would make. Scale 0 leaves the prediction as is.
        uniform = torch.rand(outputs.shape, generator=generator).clamp_(1e-9, 1 - 1e-9).to(outputs.device)
        gumbel = -torch.log(-torch.log(uniform))
        return (outputs + noise.view(-1, 1, 1) * gumbel).softmax(-1)
