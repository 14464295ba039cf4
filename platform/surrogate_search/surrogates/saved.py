"""A learned surrogate saved for reuse: its weights, a state dict read back with
``weights_only=True`` (loading one from elsewhere runs no code), beside ``surrogate.json``, what it
was learned for: the task and its metric, the method, that method's section and the ``surrogate``
settings that fix the network (``NETWORK_KEYS``).

A run that starts from a saved surrogate takes those settings as its defaults, and refuses the
surrogate, naming both sides, when the task, the method, a network setting or the network's
shape differ::

    save_surrogate(loss, "my_surrogate")                  # surrogate.pt + surrogate.json
    saved = load_surrogate("my_surrogate")
    config = PostTuneConfig.for_task(task, {**saved.settings, "steps": 100})
    posttune(config, checkpoint, surrogate=saved)         # starts from these weights: no pretraining
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from surrogate_search.surrogates.base import PostTuneLoss
from surrogate_search.surrogates.options import NETWORK_KEYS
from surrogate_search.tasks import Task

if TYPE_CHECKING:
    from surrogate_search.config import PostTuneConfig

FORMAT = "surrogate-search/surrogate/v1"
STATE_FILE = "surrogate.pt"
ABOUT_FILE = "surrogate.json"
MLFLOW_EXTRA_FILES = "extra_files"
"""Where an MLflow model folder keeps the two files (logged as the model's ``extra_files``)."""


def describe(loss: PostTuneLoss) -> dict[str, Any]:
    """What ``surrogate.json`` holds for the surrogate of ``loss``."""
    task, config = loss.task, loss.config
    network = {f"surrogate.{key}" for key in NETWORK_KEYS}
    settings = {k: v for k, v in config.dotted(loss.sections()).items()
                if k in network or k.startswith(f"{loss.name}.")}
    return {"format": FORMAT, "task": task.name, "task_options": dict(task.options), "metric": task.metric_name,
            "higher_is_better": task.metric.higher_is_better, "method": loss.name, "settings": settings,
            "surrogate_shape": list(task.surrogate_shape),
            "inputs": "surrogate(predictions, targets) -> estimated metric per item"}


def save_surrogate(loss: PostTuneLoss, folder: str | Path) -> Path:
    """Write ``loss``'s surrogate to ``folder`` (``surrogate.pt`` and ``surrogate.json``); returns the folder."""
    if not loss.learned:
        raise ValueError(f"method {loss.name!r} is a fixed loss: it has no surrogate to save")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in loss.state_dict().items()}, out / STATE_FILE)
    (out / ABOUT_FILE).write_text(json.dumps(describe(loss), indent=2, default=str) + "\n", encoding="utf-8")
    return out


@dataclass
class SavedSurrogate:
    """A learned surrogate's weights and what they were learned for (see the module's docstring)."""

    state: dict[str, torch.Tensor]
    about: dict[str, Any]
    source: str = ""
    """Where it came from: a folder, or the registered model URI it was asked for by."""
    resolved: str = ""
    """The registered version ``source`` named when it was read (``models:/<name>/<version>``
    for ``models:/<name>@champion``); empty for a folder."""

    @property
    def method(self) -> str:
        return str(self.about["method"])

    @property
    def settings(self) -> dict[str, Any]:
        """Dotted post-tuning settings it was learned with: ``method``, the network's and the method's own."""
        return {"method": self.method, **self.about["settings"]}

    def check(self, task: Task, config: PostTuneConfig) -> None:
        """Fail, naming both sides, when a post-tuning of ``task`` with ``config`` cannot start from it."""
        where, about = self.source or "the saved surrogate", self.about
        if (about["task"], about["metric"]) != (task.name, task.metric_name):
            raise ValueError(f"{where} is a surrogate of {about['metric']} on task {about['task']!r}; the "
                             f"post-tuning is on task {task.name!r} ({task.metric_name})")
        if config.method != self.method:
            raise ValueError(f"{where} was learned by method {self.method!r}; the post-tuning asks for method "
                             f"{config.method!r}")
        if list(about["surrogate_shape"]) != list(task.surrogate_shape):
            raise ValueError(f"{where} reads predictions of shape {tuple(about['surrogate_shape'])} (frames, "
                             f"classes); task {task.name!r} here makes {tuple(task.surrogate_shape)}")
        asked = config.dotted()
        differ = [k for k in sorted(about["settings"]) if k.startswith("surrogate.") and asked.get(k) != about["settings"][k]]
        if differ:
            raise ValueError(f"{where} was learned with " + ", ".join(f"{k}={about['settings'][k]!r}" for k in differ)
                             + "; the post-tuning asks for " + ", ".join(f"{k}={asked.get(k)!r}" for k in differ))

    def load_into(self, loss: PostTuneLoss) -> None:
        """Check ``loss`` against what this surrogate was learned for, then give it these weights."""
        self.check(loss.task, loss.config)
        own = loss.state_dict()
        misfits = sorted(k for k in own.keys() | self.state.keys()
                         if k not in own or k not in self.state or own[k].shape != self.state[k].shape)
        if misfits:
            raise ValueError(f"{self.source or 'the saved surrogate'} does not fit the {loss.name} network built here: "
                             + "; ".join(f"{k} {_shape(self.state, k)} there, {_shape(own, k)} here" for k in misfits[:3]))
        loss.load_state_dict(self.state)


def _shape(state: dict[str, torch.Tensor], key: str) -> str:
    return str(tuple(state[key].shape)) if key in state else "absent"


def load_surrogate(path: str | Path, source: str | None = None) -> SavedSurrogate:
    """Read a surrogate written by :func:`save_surrogate` from ``path``: that folder, or an MLflow
    model folder holding the files in ``extra_files/``. ``source`` names it in messages (default the path)."""
    folder = Path(path)
    if not (folder / ABOUT_FILE).exists() and (folder / MLFLOW_EXTRA_FILES / ABOUT_FILE).exists():
        folder = folder / MLFLOW_EXTRA_FILES
    name = source or str(path)
    if not (folder / ABOUT_FILE).is_file() or not (folder / STATE_FILE).is_file():
        raise FileNotFoundError(f"{name}: no saved surrogate there (expected {STATE_FILE} and {ABOUT_FILE}, or an "
                                f"MLflow model folder with them in {MLFLOW_EXTRA_FILES}/)")
    about = json.loads((folder / ABOUT_FILE).read_text(encoding="utf-8"))
    if not isinstance(about, dict) or about.get("format") != FORMAT:
        found = about.get("format") if isinstance(about, dict) else type(about).__name__
        raise ValueError(f"{name}: {ABOUT_FILE} has format {found!r}, expected {FORMAT!r}")
    try:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception:  # a refused pickle included: never retried any other way
        raise ValueError(f"{name}: {STATE_FILE} is not a plain state dict of tensors; it was refused and nothing in "
                         f"it was run") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{name}: {STATE_FILE} is not a state dict of tensors")
    return SavedSurrogate(state, about, name)
