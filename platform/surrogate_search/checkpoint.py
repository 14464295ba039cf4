"""Base-model checkpoints: a state dict plus the config that rebuilds the model.

Saved with ``torch.save`` as plain dicts, tensors and numbers, so they load with
``torch.load(..., weights_only=True)``: a checkpoint from elsewhere cannot run code.

A checkpoint also records the version of its task's data definition (``Task.version``) and the
fingerprint of its task's definition and data (``Task.fingerprint``: options, data seed, split
sizes, labels, classes): a base model trained before the task's data or labelling changed is
refused (:meth:`BaseCheckpoint.check_fingerprint`) instead of being post-tuned into nonsense.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import pickletools
import re
import shlex
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from surrogate_search.tasks import TASKS, Splits, Task, get_task
from surrogate_search.tasks.base import labels_digest

log = logging.getLogger(__name__)

FORMAT = "surrogate-search/base-model/v1"
FILENAME = "model.pt"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, belongs to another task, or to an older definition of its task."""


class StaleCheckpointError(CheckpointError):
    """A checkpoint pretrained for another ``version`` of its task's data definition."""


def pretrain_command(task_name: str, task_options: dict[str, Any], task_seed: int, out: str | Path) -> str:
    """The ``surrogate-search pretrain`` command line that (re)trains this base checkpoint."""
    return shlex.join(["surrogate-search", "pretrain", *task_words(task_name, task_options, task_seed), "--out", str(out)])


def task_words(task_name: str, task_options: dict[str, Any], task_seed: int) -> list[str]:
    """``--task``, ``--option`` and ``--data-seed`` words of a command line that names this task."""
    words = ["--task", task_name]
    for key, value in sorted(task_options.items()):
        words += ["--option", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return [*words, "--data-seed", str(task_seed)] if task_seed else words


def labels_fingerprint(labels: Sequence[Any]) -> str:
    """A short hash of a split's labels (in order): it changes when the labelling, the split sizes or
    the split seed change. Pass ``labels_fingerprint(splits.val.labels)`` to ``save_checkpoint`` and
    check it with ``BaseCheckpoint.check_labels`` once the splits are loaded."""
    return labels_digest(labels)


def fingerprint_changes(saved: Any, now: Any, prefix: str = "") -> list[str]:
    """``key: saved -> now`` for every entry of two fingerprints that differs (nested keys dotted)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        return [change for key in sorted(set(saved) | set(now), key=str)
                for change in fingerprint_changes(saved.get(key), now.get(key), f"{prefix}{key}.")]
    return [] if saved == now else [f"{prefix.rstrip('.')}: {saved!r} -> {now!r}"]


def task_version(task_name: str) -> int | None:
    """The registered task's current ``version``; None for a task not registered in this process
    (its plugin not loaded): building it fails later with the known names."""
    if task_name not in TASKS:
        return None
    return int(getattr(TASKS.get(task_name), "version", 1))


@dataclass
class BaseCheckpoint:
    task_name: str
    task_seed: int
    task_options: dict[str, Any]
    model_options: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    task_version: int = 1
    """``Task.version`` when the checkpoint was saved (1 for checkpoints older than the field)."""
    data_fingerprint: str | None = None
    """``labels_fingerprint`` of the validation labels when saved; None if the saver gave none."""
    fingerprint: dict[str, Any] | None = None
    """``Task.fingerprint`` of its task and data when pretrained; None for checkpoints saved before
    fingerprints were recorded (accepted with a warning: nothing to compare)."""

    def pretrain_command(self) -> str:
        out = self.path.parent if self.path is not None else f"runs/base_{self.task_name}"
        return pretrain_command(self.task_name, self.task_options, self.task_seed, out)

    def check_labels(self, labels: Sequence[Any]) -> None:
        """Raise ``CheckpointError`` if ``labels`` (the task's validation labels as loaded now) are not
        the ones the base model was trained against. A checkpoint saved without a fingerprint passes."""
        if self.data_fingerprint is None:
            return
        now = labels_fingerprint(labels)
        if now != self.data_fingerprint:
            raise CheckpointError(
                f"checkpoint {self.path} was pretrained on other data than task {self.task_name!r} "
                f"(options {self.task_options}, data seed {self.task_seed}) gives now: its validation labels had "
                f"fingerprint {self.data_fingerprint}, they have {now} (the labelling, split sizes or data changed). "
                f"Pretrain the base again: `{self.pretrain_command()}`")

    def check_fingerprint(self, task: Task, splits: Splits) -> None:
        """Raise ``StaleCheckpointError`` naming what changed, and the command that pretrains the base
        again, when ``task.fingerprint(splits)`` (its data as loaded now) is not what the base model
        was pretrained on. A checkpoint saved before fingerprints existed passes with a warning."""
        if self.fingerprint is None:
            log.warning("checkpoint %s was saved without a fingerprint of its task's data (pretrained by an older "
                        "version): it is used as is, unchecked. Pretrain it again to record one: `%s`",
                        self.path, self.pretrain_command())
            return
        changes = fingerprint_changes(self.fingerprint, json.loads(json.dumps(task.fingerprint(splits), default=str)))
        if changes:
            raise StaleCheckpointError(
                f"checkpoint {self.path} was pretrained on other data than task {self.task_name!r} (options "
                f"{self.task_options}, data seed {self.task_seed}) gives now; changed: {'; '.join(changes)}. A base "
                f"model trained on other data is wrong for this one. Pretrain the base again: "
                f"`{self.pretrain_command()}`")

    def build_task(self) -> Task:
        return get_task(self.task_name, seed=self.task_seed, **self.task_options)

    def build_model(self, task: Task | None = None) -> nn.Module:
        task = task or self.build_task()
        model = task.build_model(**self.model_options)
        model.load_state_dict(self.state_dict)
        return model


def checkpoint_file(path: str | Path) -> Path:
    """``path`` itself if it is a file or a ``.pt`` name, else ``path/model.pt`` (a folder may have a
    dot in its name: ``runs/base_v1.2``)."""
    path = Path(path)
    return path if path.is_file() or (path.suffix == ".pt" and not path.is_dir()) else path / FILENAME


def save_checkpoint(path: str | Path, task: Task, model: nn.Module, model_options: dict[str, Any],
                    metrics: dict[str, Any] | None = None, *, data_fingerprint: str | None = None,
                    splits: Splits | None = None) -> Path:
    """Write ``path/model.pt`` (atomically): the weights, what rebuilds the task and model, the
    task's ``version``, with ``splits`` (the data the model was trained on) ``task.fingerprint(splits)``
    and, if given, ``data_fingerprint`` (``labels_fingerprint`` of the validation labels the model
    was selected on)."""
    file = checkpoint_file(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "task": task.name,
        "task_version": int(type(task).version),
        "data_fingerprint": data_fingerprint,
        # through JSON: plain strings, numbers, lists and dicts, which load with weights_only=True
        "fingerprint": json.loads(json.dumps(task.fingerprint(splits), default=str)) if splits is not None else None,
        "task_seed": task.seed,
        "task_options": dict(task.options),
        "model_options": dict(model_options),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": dict(metrics or {}),
    }
    tmp = file.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(file)
    return file


SAFE_IMPORTS = ("torch.", "collections.OrderedDict")
"""What a checkpoint's pickle imports (tensors, storages, ordered dicts); anything else is code."""


def pickled_imports(file: Path) -> list[str]:
    """What the pickles in ``file`` (a bare pickle, torch's legacy format of several pickles, or the
    ``data.pkl`` of torch's zip format) ask to import, read with ``pickletools``, which runs nothing.
    Stops at the first bytes that are not a pickle (torch's raw tensor data, or damage)."""
    found: list[str] = []
    try:
        if zipfile.is_zipfile(file):
            with zipfile.ZipFile(file) as archive:
                inner = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                data = archive.read(inner) if inner else b""
        else:
            data = file.read_bytes()
        stream = io.BytesIO(data)
        while stream.tell() < len(data):
            strings: list[str] = []
            for op, arg, _ in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):  # "module name"
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:  # module and name pushed just before
                    found.append(f"{strings[-2]}.{strings[-1]}")
                if isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # not (or no longer) a pickle
        pass
    return found


def _unreadable_reason(file: Path, exc: BaseException) -> str:
    """Why torch could not read a file, in our words. Torch's own message for a refused pickle
    advises retrying with ``weights_only=False`` or allow-listing the object, either of which would
    run the code of a file from elsewhere: it is never shown."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
    unsafe = [found.group(1)] if found else [name for name in pickled_imports(file) if not name.startswith(SAFE_IMPORTS)]
    if unsafe:
        return (f"is not a safe checkpoint: it asks to import {unsafe[0]}, which a checkpoint never needs "
                f"(it may be malicious)")
    return "is not a valid surrogate-search checkpoint: the file is empty, truncated, damaged or not a torch checkpoint"


def load_checkpoint(path: str | Path, expected_task: str | None = None) -> BaseCheckpoint:
    """Load a base checkpoint; ``expected_task`` guards against using one task's model for another.

    Refused with ``CheckpointError``: a missing file, anything that is not a checkpoint written by
    ``save_checkpoint`` (nothing in it is run), another task's checkpoint, and a checkpoint saved for
    another ``version`` of its task than the registered one (a checkpoint without the field counts
    as version 1)."""
    file = checkpoint_file(path)
    if not file.exists():
        raise CheckpointError(f"no checkpoint at {file} (train one with `surrogate-search pretrain --task "
                              f"{expected_task or 'TASK'} --out {file.parent}`)")
    try:
        with warnings.catch_warnings():  # torch's notes on a pickle protocol it did not write: the error below says it all
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors all mean "not a checkpoint we can trust"
        # `from None`: the chained torch error would repeat its advice to load with weights_only=False.
        raise CheckpointError(
            f"{file} {_unreadable_reason(file, exc)}. It was refused and "
            f"nothing in it was run; do not load it any other way. Make a good one with "
            f"`surrogate-search pretrain --task {expected_task or 'TASK'} --out {file.parent}` "
            f"(or copy model.pt again from the folder it was pretrained in).") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"checkpoint {file} has format {found!r}, expected {FORMAT!r}")
    if expected_task is not None and payload["task"] != expected_task:
        raise CheckpointError(f"checkpoint {file} was trained for task {payload['task']!r}, not {expected_task!r}")
    checkpoint = BaseCheckpoint(
        task_name=payload["task"],
        task_seed=int(payload["task_seed"]),
        task_options=dict(payload["task_options"]),
        model_options=dict(payload["model_options"]),
        state_dict=payload["state_dict"],
        metrics=dict(payload.get("metrics", {})),
        path=file,
        task_version=int(payload.get("task_version", 1)),
        data_fingerprint=payload.get("data_fingerprint"),
        fingerprint=payload.get("fingerprint"),
    )
    current = task_version(checkpoint.task_name)
    if current is not None and current != checkpoint.task_version:
        raise StaleCheckpointError(
            f"checkpoint {file} was pretrained for version {checkpoint.task_version} of task "
            f"{checkpoint.task_name!r}, but this code defines version {current}: the task's data or labelling "
            f"changed, and a base model trained on the old definition is wrong for the new one. Pretrain the "
            f"base again: `{checkpoint.pretrain_command()}`")
    return checkpoint
