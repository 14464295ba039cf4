"""Base-model checkpoints: a state dict plus the config that rebuilds the model.

Saved with ``torch.save`` as plain dicts, tensors and numbers, so they load with
``torch.load(..., weights_only=True)``: a checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from surrogate_search.tasks import Task, get_task

FORMAT = "surrogate-search/base-model/v1"
FILENAME = "model.pt"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or belongs to another task."""


@dataclass
class BaseCheckpoint:
    task_name: str
    task_seed: int
    task_options: dict[str, Any]
    model_options: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def build_task(self) -> Task:
        return get_task(self.task_name, seed=self.task_seed, **self.task_options)

    def build_model(self, task: Task | None = None) -> nn.Module:
        task = task or self.build_task()
        model = task.build_model(**self.model_options)
        model.load_state_dict(self.state_dict)
        return model


def checkpoint_file(path: str | Path) -> Path:
    """``path`` itself if it is a file, else ``path/model.pt``."""
    path = Path(path)
    return path / FILENAME if path.is_dir() or not path.suffix else path


def save_checkpoint(path: str | Path, task: Task, model: nn.Module, model_options: dict[str, Any],
                    metrics: dict[str, Any] | None = None) -> Path:
    file = checkpoint_file(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "task": task.name,
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


def load_checkpoint(path: str | Path, expected_task: str | None = None) -> BaseCheckpoint:
    """Load a base checkpoint; ``expected_task`` guards against using one task's model for another."""
    file = checkpoint_file(path)
    if not file.exists():
        raise CheckpointError(f"no checkpoint at {file} (train one with `surrogate-search pretrain --task TASK --out {file.parent}`)")
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors all mean "not a checkpoint we can trust"
        raise CheckpointError(f"checkpoint {file} is corrupt or not a surrogate-search checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"checkpoint {file} has format {found!r}, expected {FORMAT!r}")
    if expected_task is not None and payload["task"] != expected_task:
        raise CheckpointError(f"checkpoint {file} was trained for task {payload['task']!r}, not {expected_task!r}")
    return BaseCheckpoint(
        task_name=payload["task"],
        task_seed=int(payload["task_seed"]),
        task_options=dict(payload["task_options"]),
        model_options=dict(payload["model_options"]),
        state_dict=payload["state_dict"],
        metrics=dict(payload.get("metrics", {})),
        path=file,
    )
