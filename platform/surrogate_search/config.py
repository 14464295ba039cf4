"""The post-tuning configuration: one object that a CLI flag, a YAML search space or a Ray Tune
trial fills in, built in one place (:meth:`PostTuneConfig.for_task`) from dotted keys.

Top-level keys are the budget and optimiser of the model updates (``steps``, ``lr``, ...). Each
section belongs to someone: ``surrogate`` and ``sampling`` to every learned surrogate, and one
section per registered loss that declares ``Options`` (``anyloss``, ``relational``, a plugin's),
named after the loss. Each key's meaning is documented where its section is defined:
:class:`PostTuneConfig` here, ``SurrogateConfig`` in ``surrogates/options.py``, ``SamplingConfig``
in ``sampling.py``, and a loss's ``Options`` beside the loss (``anyloss.metric`` and
``anyloss.amplification``, AnyLoss's L in [10, 73], in ``surrogates/anyloss.py``). Unknown keys,
moved keys and out-of-range values fail with the key and the value named::

    config = PostTuneConfig.for_task(task, {"method": "relational", "surrogate.width": 32,
                                            "relational.rank_temperature": 0.05})
    config.surrogate.width          # 32
    config.section("relational")    # RelationalOptions(rank_temperature=0.05)
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from surrogate_search.sampling import SamplingConfig
from surrogate_search.surrogates import LEARNED_SECTIONS, LOSSES, loss_class
from surrogate_search.surrogates.options import SurrogateConfig
from surrogate_search.surrogates.proxy import judged_by_confusion_matrix
from surrogate_search.utils import check_range, flatten

if TYPE_CHECKING:
    from surrogate_search.tasks import Task

LR_SCHEDULES = ("constant", "cosine")
SELECTIONS = ("auto", "metric", "best_threshold")
MOVED = {
    "proxy_weight": "surrogate.proxy_weight",
    "surrogate.rank_temperature": "relational.rank_temperature",
}
"""Old spellings, refused with the new one named (a search's old best_config.yaml, an old script)."""
REMOVED = {
    "anyloss.beta": "AnyLoss optimises the task's own metric (or anyloss.metric, a registered "
                    "confusion-matrix metric); register an F-beta metric with the beta you want",
}


def loss_sections() -> dict[str, type]:
    """Each registered loss's own section: its name -> its ``Options`` dataclass."""
    return {name: loss_class(name).Options for name in LOSSES.in_order()  # type: ignore[misc]
            if loss_class(name).Options is not None}


@dataclass
class PostTuneConfig:
    """Post-tuning from a base checkpoint: the same budget (``steps`` x ``batch_size``) for every method."""

    method: str = "deep_embedding"
    """A registered post-tuning loss (``surrogate-search compare --help`` lists them)."""
    steps: int = 300
    """Model updates: the extra budget every method gets."""
    batch_size: int = 32
    """Samples per model update (and the set size a set-level surrogate scores)."""
    lr: float = 1e-4
    lr_schedule: str = "constant"
    """Step size over the model updates: ``constant``, or ``cosine`` (from ``lr`` down to 0 at
    the last step: small late steps for a model that is already near a good optimum)."""
    eval_every: int = 50
    selection: str = "auto"
    """What the best-validation selection compares (the base model is always a candidate):
    ``metric``, the task's metric on val as the model outputs it; ``best_threshold``, for tasks
    judged by a confusion-matrix metric (F1), the metric on val at the decision threshold that is
    best on val, since the reported figure is test at that threshold; ``auto``, ``best_threshold``
    where the task has a threshold, else ``metric``."""
    leave_base_confidence: float = 0.0
    """How sure val must be before a run hands back a model other than the base: the share of random
    halves of val on which the selected model beats the base (see :mod:`surrogate_search.selection`).
    0: the best on val wins, whatever the margin; e.g. 0.95: a gain that val's noise could explain
    keeps the base. In [0, 1)."""
    data: str = "tune"
    """Where the model is updated (and a learned surrogate draws the model's own predictions):
    ``tune``, the part of the data the base model never trained on, where it still makes errors;
    ``train``, the base model's own (memorised) training split, kept to measure the difference."""
    seed: int = 0
    amp: bool = False
    """bfloat16 autocast for the model on CUDA."""
    device: str = "auto"
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    options: dict[str, Any] = field(default_factory=lambda: {n: cls() for n, cls in loss_sections().items()})
    """Each registered loss's own section, by loss name (read it with :meth:`section`)."""

    # --- building ---------------------------------------------------------------------------------
    @classmethod
    def for_task(cls, task: Task, overrides: Mapping[str, Any] | None = None) -> PostTuneConfig:
        """The task's defaults (:meth:`Task.posttune_defaults`), then ``overrides`` (dotted keys
        such as ``surrogate.width``, or nested sections), validated."""
        config = cls.from_dotted({**task.posttune_defaults(), **flatten(overrides or {})}).validate()
        if config.selection == "best_threshold" and not judged_by_confusion_matrix(task):
            raise ValueError(f"post-tuning config: selection='best_threshold' needs a task judged by a "
                             f"confusion-matrix metric; {task.name} is judged by {task.metric_name}")
        return config

    @classmethod
    def from_dotted(cls, values: Mapping[str, Any]) -> PostTuneConfig:
        """Build from dotted keys (nested sections are accepted and flattened); not validated."""
        config = cls()
        sections = {"surrogate": config.surrogate, "sampling": config.sampling, **config.options}
        for key, value in flatten(values).items():
            cls.check_key(key)
            head, _, rest = key.partition(".")
            if rest:
                setattr(sections[head], rest, _coerce(value, getattr(sections[head], rest), key))
            else:
                setattr(config, key, _coerce(value, getattr(config, key), key))
        return config

    @staticmethod
    def known_keys() -> list[str]:
        """Every dotted key a config accepts (the registered losses' sections included)."""
        return list(PostTuneConfig().dotted())

    @classmethod
    def check_key(cls, key: str) -> None:
        """Fail for a key no config accepts, naming the known keys (or the new spelling of a moved one)."""
        if key in MOVED:
            raise ValueError(f"post-tuning config: {key!r} is now {MOVED[key]!r}")
        if key in REMOVED:
            raise ValueError(f"post-tuning config: {key!r} no longer exists: {REMOVED[key]}")
        known = cls.known_keys()
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"post-tuning config: unknown key {key!r}; known: {known}.{hint}")

    def replace(self, changes: Mapping[str, Any] | None = None, /, **top: Any) -> PostTuneConfig:
        """A validated copy with some settings changed: ``config.replace(method="proxy", seed=2)``,
        ``config.replace({"sampling.strategy": "global"})``."""
        return PostTuneConfig.from_dotted({**self.dotted(), **flatten(changes or {}), **top}).validate()

    def validate(self) -> PostTuneConfig:
        loss_class(self.method)  # an unknown method lists the known ones
        check_range("", self, positive=("steps", "batch_size", "eval_every"), step_size=("lr",))
        if self.data not in ("tune", "train"):
            raise ValueError(f"post-tuning config: data must be 'tune' or 'train', got {self.data!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"post-tuning config: lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                             f"got {self.lr_schedule!r}")
        if not 0.0 <= self.leave_base_confidence < 1.0:
            raise ValueError(f"post-tuning config: leave_base_confidence must be in [0, 1), "
                             f"got {self.leave_base_confidence!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"post-tuning config: selection must be one of {', '.join(SELECTIONS)}, "
                             f"got {self.selection!r}")
        for section in (self.surrogate, self.sampling, *self.options.values()):
            if hasattr(section, "validate"):
                section.validate()
        return self

    # --- reading ----------------------------------------------------------------------------------
    def section(self, name: str) -> Any:
        """A loss's own options: ``config.section("anyloss").amplification``."""
        if name not in self.options:
            raise KeyError(f"no config section {name!r}; sections of registered losses: {sorted(self.options)}")
        return self.options[name]

    def to_dict(self) -> dict[str, Any]:
        """Nested, one mapping per section: what ``config.yaml`` and ``best_config.yaml`` hold."""
        top = {name: getattr(self, name) for name in _TOP_LEVEL}
        return {**top, "surrogate": dataclasses.asdict(self.surrogate), "sampling": dataclasses.asdict(self.sampling),
                **{name: dataclasses.asdict(options) for name, options in self.options.items()}}

    def dotted(self, sections: Iterable[str] | None = None) -> dict[str, Any]:
        """Dotted keys (``{"surrogate.width": 64, ...}``): the top level and ``sections`` (default all)."""
        keep = None if sections is None else set(sections)
        return {k: v for k, v in flatten(self.to_dict()).items()
                if "." not in k or keep is None or k.partition(".")[0] in keep}

    def params(self) -> dict[str, Any]:
        """What MLflow records of a run: the top level and the sections its method reads."""
        return self.dotted(loss_class(self.method).sections())


_TOP_LEVEL = tuple(f.name for f in dataclasses.fields(PostTuneConfig) if f.name not in ("options", *LEARNED_SECTIONS))


def _coerce(value: Any, default: Any, key: str) -> Any:
    # YAML and Optuna hand back ints for floats and numpy scalars; accept what is meant.
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"post-tuning config: {key} must be true or false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    if default is not None and not isinstance(value, type(default)):
        kind = {float: "a number", int: "an integer", str: "a string"}.get(type(default), type(default).__name__)
        raise ValueError(f"post-tuning config: {key} must be {kind}, got {value!r}")
    return value
