"""``synthetic_text``: rendered word images read by a CRNN trained with CTC (or a parallel attention
decoder trained with per-position cross-entropy), judged by edit distance."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from surrogate_search.cache import default_cache_dir
from surrogate_search.registry import Registry
from surrogate_search.tasks.attention_decoder import ParallelAttentionRecognizer
from surrogate_search.tasks.base import Split, Splits, Task, TrainDefaults, register_task
from surrogate_search.tasks.crnn import CRNN
from surrogate_search.tasks.ctc_align import aligned_targets
from surrogate_search.tasks.text_pairs import ctc_path, position_path, random_edit, soft_frames
from surrogate_search.tasks.text_render import CHARSET, IMAGE_WIDTH, MAX_LABEL_LENGTH, RenderOptions, render_split, sample_label

log = logging.getLogger(__name__)

BLANK = 0
NUM_CLASSES = len(CHARSET) + 1
FRAMES = IMAGE_WIDTH // 4  # the CRNN downsamples width 4x
POSITIONS = MAX_LABEL_LENGTH  # the attention decoder's outputs: one per possible character
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


def _text_split(images: np.ndarray, labels: list[str]) -> Split:
    targets, lengths = encode_labels(labels)
    return Split({"images": torch.from_numpy(images).unsqueeze(1), "targets": targets, "target_lengths": lengths}, labels)


def greedy_ctc_decode(frame_classes: torch.Tensor) -> list[str]:
    """Best-path decoding of ``(B, T)`` per-frame class indices: merge repeats, drop blanks."""
    frames = frame_classes.detach().cpu()
    keep = torch.ones_like(frames, dtype=torch.bool)
    keep[:, 1:] = frames[:, 1:] != frames[:, :-1]
    keep &= frames != BLANK
    return ["".join(CHARSET[c - 1] for c in row[mask].tolist()) for row, mask in zip(frames, keep)]


def position_decode(position_classes: torch.Tensor) -> list[str]:
    """Decoding of ``(B, P)`` per-position class indices: the characters before the first class 0."""
    texts = []
    for row in position_classes.detach().cpu().tolist():
        end = row.index(BLANK) if BLANK in row else len(row)
        texts.append("".join(CHARSET[c - 1] for c in row[:end]))
    return texts


class TextModel(ABC):
    """A model family for ``synthetic_text`` and the output layout it comes with: how its outputs
    line up with the label, hence its proxy loss, its decoding and what a surrogate compares with."""

    length: ClassVar[int]
    """Outputs per image: frames or character positions."""

    @abstractmethod
    def build(self, **model_options: Any) -> nn.Module: ...

    @abstractmethod
    def default_options(self) -> dict[str, Any]: ...

    @abstractmethod
    def proxy_loss(self, outputs: torch.Tensor, batch: Split) -> torch.Tensor: ...

    @abstractmethod
    def decode(self, classes: torch.Tensor) -> list[str]:
        """``(B, length)`` class per output -> strings."""

    @abstractmethod
    def target_classes(self, targets: torch.Tensor) -> torch.Tensor:
        """``(B, MAX_LABEL_LENGTH)`` encoded labels -> ``(B, length)`` class per output."""

    @abstractmethod
    def path(self, text: str, rng: np.random.Generator) -> np.ndarray:
        """A class per output that :meth:`decode` reads back as ``text`` (for global pairs)."""

    def align(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One-hot ``targets`` (from :meth:`target_classes`) laid out as ``predictions`` would be
        if they were right; the identity where the layout is fixed (one output per character)."""
        return targets


TEXT_MODELS: Registry[TextModel] = Registry("text model")


@TEXT_MODELS.register("crnn")
class CTCModel(TextModel):
    """The CRNN: one output per image column (frame), trained with CTC, read by greedy CTC decoding."""

    length = FRAMES

    def build(self, **model_options: Any) -> nn.Module:
        return CRNN(NUM_CLASSES, **model_options)

    def default_options(self) -> dict[str, Any]:
        return {"channels": 16, "hidden": 96, "lstm_layers": 1}

    def proxy_loss(self, outputs: torch.Tensor, batch: Split) -> torch.Tensor:
        log_probs = outputs.float().log_softmax(-1).transpose(0, 1)  # (T, B, C) as CTC wants
        input_lengths = torch.full((outputs.shape[0],), outputs.shape[1], dtype=torch.long)
        return F.ctc_loss(log_probs, batch.tensors["targets"], input_lengths, batch.tensors["target_lengths"],
                          blank=BLANK, reduction="mean", zero_infinity=True)

    def decode(self, classes: torch.Tensor) -> list[str]:
        return greedy_ctc_decode(classes)

    def target_classes(self, targets: torch.Tensor) -> torch.Tensor:
        # The label's characters in the first frames, then blanks: not where a CTC model puts them
        # (see ctc_align.aligned_targets for the label in the prediction's own frames).
        frames = torch.full((len(targets), FRAMES), BLANK, dtype=torch.long, device=targets.device)
        frames[:, :MAX_LABEL_LENGTH] = targets
        return frames

    def path(self, text: str, rng: np.random.Generator) -> np.ndarray:
        return ctc_path(text, FRAMES, rng, BLANK)

    def align(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # The packed target holds the label's characters, then blanks: read the label back and put
        # it on its best CTC path under the prediction (the frames a correct output would use).
        classes = targets.argmax(-1)[:, :MAX_LABEL_LENGTH]
        lengths = (classes != BLANK).sum(1)
        return aligned_targets(predictions, classes, lengths, NUM_CLASSES, blank=BLANK).to(targets.dtype)


@TEXT_MODELS.register("attention")
class PositionModel(TextModel):
    """The parallel attention decoder: output ``i`` is the label's ``i``-th character (class 0 past
    its end), trained with cross-entropy per position."""

    length = POSITIONS

    def build(self, **model_options: Any) -> nn.Module:
        return ParallelAttentionRecognizer(NUM_CLASSES, positions=POSITIONS, **model_options)

    def default_options(self) -> dict[str, Any]:
        return {"channels": 16, "hidden": 96, "lstm_layers": 1, "heads": 4}

    def proxy_loss(self, outputs: torch.Tensor, batch: Split) -> torch.Tensor:
        # Mean over every position of every image, the padding after the label included: "end of
        # text" has to be learned like any character.
        targets = self.target_classes(batch.tensors["targets"])
        return F.cross_entropy(outputs.float().reshape(-1, NUM_CLASSES), targets.reshape(-1))

    def decode(self, classes: torch.Tensor) -> list[str]:
        return position_decode(classes)

    def target_classes(self, targets: torch.Tensor) -> torch.Tensor:
        return targets[:, :POSITIONS]  # encode_labels already pads with class 0

    def path(self, text: str, rng: np.random.Generator) -> np.ndarray:
        return position_path(text, POSITIONS, BLANK)


@register_task("synthetic_text")
class SyntheticText(Task):
    """Scene-text-like word recognition on rendered images (24 x 96 grey), 36 case-folded characters.

    Options: ``train_size``, ``val_size``, ``test_size`` (images per split; a CRNN trained to its plateau
    on the default 60,000 training images still memorises them, 26 errors per 1,000 on them against
    217 on fresh ones: ``pretrain --fresh-data`` renders new ones for every epoch), ``tune_size`` (freshly
    rendered images for post-tuning, never seen by the base model; 0: half ``train_size``), ``model`` (``crnn``,
    the default: per-frame outputs and CTC; ``attention``: one output per character position and
    cross-entropy, see :data:`TEXT_MODELS`) and any field of
    :class:`~surrogate_search.tasks.text_render.RenderOptions`.
    """

    name = "synthetic_text"
    metric_name = "edit_distance"
    checkpoint_options = ("model",)
    report_metrics = ("normalized_edit_distance", "char_error_rate", "word_accuracy")

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        sizes = {"train_size": 60000, "val_size": 1000, "test_size": 2000, "tune_size": 0}
        render = {f.name for f in fields(RenderOptions)}
        unknown = set(options) - set(sizes) - {"model"} - render
        if unknown:
            raise ValueError(f"task 'synthetic_text': unknown option(s) {sorted(unknown)}; "
                             f"known: {sorted(sizes) + ['model'] + sorted(render)}")
        merged = {**sizes, "model": "crnn", **asdict(RenderOptions()), **options}
        for key in sizes:
            least = 0 if key == "tune_size" else 1  # tune_size 0: half the training split's size
            if not isinstance(merged[key], int) or isinstance(merged[key], bool) or merged[key] < least:
                raise ValueError(f"task 'synthetic_text': {key} must be an integer >= {least}, got {merged[key]!r}")
        if merged["model"] not in TEXT_MODELS:
            raise ValueError(f"task 'synthetic_text': unknown model {merged['model']!r}; known: {TEXT_MODELS.names()}")
        return merged

    @property
    def text_model(self) -> TextModel:
        """The model family the ``model`` option names, with its output layout."""
        return TEXT_MODELS.create(self.options["model"])

    @property
    def surrogate_shape(self) -> tuple[int, int]:  # type: ignore[override]  # per model, not per class
        """(frames, classes) for the CRNN, (positions, classes) for the attention decoder."""
        return (self.text_model.length, NUM_CLASSES)

    def _render_options(self) -> RenderOptions:
        return RenderOptions(**{f.name: self.options[f.name] for f in fields(RenderOptions)})

    def load_splits(self, cache_dir: str | Path | None = None) -> Splits:
        """Rendered once, then read from ``cache_dir`` (default: :func:`default_cache_dir`, resolved
        in this process, so a Ray worker uses its own node's cache)."""
        cache_dir = cache_dir or default_cache_dir()
        return Splits(*(self._load_split(name, cache_dir) for name in ("train", "val", "test", "tune")))

    def _load_split(self, split: str, cache_dir: str | Path | None) -> Split:
        # The tuning split is rendered from a seed stream of its own: images the base never saw.
        size = self.options[f"{split}_size"] or (self.options["train_size"] // 2 if split == "tune" else 0)
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
        return _text_split(images, labels)

    def fresh_train_split(self, epoch: int) -> Split:
        """``train_size`` images no split and no other epoch shows, rendered now (not cached: each is
        used once), about 2,000 images a second on one core."""
        started = time.perf_counter()
        images, labels = render_split(self.seed, "train", self.options["train_size"], self._render_options(), epoch=epoch)
        log.info("rendered %d fresh training images for epoch %d in %.0fs", len(labels), epoch, time.perf_counter() - started)
        return _text_split(images, labels)

    def default_model_options(self) -> dict[str, Any]:
        return self.text_model.default_options()

    def build_model(self, **model_options: Any) -> nn.Module:
        return self.text_model.build(**{**self.default_model_options(), **model_options})

    def train_defaults(self) -> TrainDefaults:
        return TrainDefaults(batch_size=64, lr=1e-3, max_epochs=60, patience=4)

    def posttune_defaults(self) -> dict[str, Any]:
        """The recipe that measured best (README, "What the comparisons show"): a conv surrogate
        pretrained once per base model (1,000 updates of 32 pairs from the base model's own
        predictions on the tuning images), fine-tuned one update per model update on that update's
        own batch (no second forward pass: a step costs about 1.4x a CTC step instead of 2.5x,
        with the same test figures), mixed with the proxy loss at weight 1."""
        return {**super().posttune_defaults(), "surrogate.encoder": "conv", "surrogate.proxy_weight": 1.0,
                "sampling.strategy": "local", "sampling.source": "batch", "surrogate.batch_size": 32,
                "surrogate.pretrain_steps": 1000, "surrogate.warmup_steps": 0}

    def forward(self, model: nn.Module, batch: Split) -> torch.Tensor:
        images = batch.tensors["images"].float().div_(127.5).sub_(1.0)
        return model(images)

    def proxy_loss(self, outputs: torch.Tensor, batch: Split) -> torch.Tensor:
        """CTC for the CRNN; cross-entropy per position for the attention decoder."""
        return self.text_model.proxy_loss(outputs, batch)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.softmax(-1)

    def decode(self, predictions: torch.Tensor) -> list[str]:
        return self.decode_classes(predictions.argmax(-1))

    def decode_classes(self, classes: torch.Tensor) -> list[str]:
        return self.text_model.decode(classes)

    # --- what a learned surrogate sees -------------------------------------------------------------
    def surrogate_targets(self, batch: Split) -> torch.Tensor:
        """Each label as a ``surrogate_shape`` one-hot sequence. CRNN: its characters in the first
        frames, then blanks. Attention decoder: its characters, then class 0, position by position,
        exactly the layout of a correct prediction."""
        return F.one_hot(self.text_model.target_classes(batch.tensors["targets"]), NUM_CLASSES).float()

    def align_targets(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """CRNN: the label on its best CTC path under each prediction (a correct prediction's own
        frames); attention decoder: unchanged (already position-aligned)."""
        return self.text_model.align(predictions, targets)

    def true_class_probabilities(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``(items, outputs)``: the probability of the (aligned) target class at each frame or position."""
        return (predictions * targets).sum(-1)

    def random_pairs(self, n_items: int, set_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=generator)))
        labels = [sample_label(rng, self._render_options()) for _ in range(n_items)]
        model = self.text_model
        paths = np.stack([model.path(random_edit(label, rng), rng) for label in labels])
        targets, lengths = encode_labels(labels)
        batch = Split({"targets": targets, "target_lengths": lengths}, labels)
        return soft_frames(paths, NUM_CLASSES, rng), self.surrogate_targets(batch), labels

    def perturb(self, outputs: torch.Tensor, noise: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # Gumbel noise at scale 1 makes the best path a sample from the model's own distribution:
        # the errors a slightly different model would make. Scale 0 leaves the prediction as is.
        uniform = torch.rand(outputs.shape, generator=generator).clamp_(1e-9, 1 - 1e-9).to(outputs.device)
        gumbel = -torch.log(-torch.log(uniform))
        return (outputs + noise.view(-1, 1, 1) * gumbel).softmax(-1)
