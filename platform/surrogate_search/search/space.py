"""Load and validate a search space (``search_spaces/*.yaml``) before any Ray work starts.

A space file names the task, the base checkpoint, the objective, the budget and the searched
post-tuning settings. Every mistake is reported with the file, the key and the bad value::

    spec = load_space("search_spaces/tabular_f1_smoke.yaml", overrides={"budget.trials": 2})
    spec.budget.trials  # 2
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from surrogate_search.config import PostTuneConfig
from surrogate_search.utils import flatten


class SpaceError(ValueError):
    """A search space file is malformed; the message names the file, the key and the value."""


TOP_KEYS = {"name", "task", "checkpoint", "pretrain_if_missing", "objective", "budget", "posttune", "space"}
TASK_KEYS = {"name", "options", "seed"}
OBJECTIVE_KEYS = {"metric", "mode"}
BUDGET_KEYS = {"trials", "concurrency", "workers_per_trial", "cpus_per_worker", "gpus_per_worker", "driver_cpus",
               "placement", "max_failures", "scheduler", "runner"}
RUNNERS = ("auto", "train", "inline")
SCHEDULER_KEYS = {"type", "grace_period", "reduction_factor"}
PARAM_KEYS = {"type", "low", "high", "log", "step", "choices", "when"}
SCHEDULERS = ("asha", "none")
PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass
class Param:
    """One searched setting: a dotted post-tuning key and its distribution."""

    key: str
    type: str
    """``float``, ``int`` or ``categorical``."""
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)
    when: dict[str, list[Any]] = field(default_factory=dict)
    """Conditions on earlier parameters: the parameter exists only when each named key takes one of
    the listed values (``sampling.local_ratio`` only when ``sampling.strategy`` is local_global)."""

    def active(self, chosen: dict[str, Any]) -> bool:
        return all(key in chosen and chosen[key] in values for key, values in self.when.items())


@dataclass
class Scheduler:
    type: str = "asha"
    grace_period: int = 1
    """Evaluations every trial gets before ASHA may stop it."""
    reduction_factor: int = 2


@dataclass
class Budget:
    trials: int = 8
    concurrency: int = 2
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    driver_cpus: float = 1.0
    """CPUs held by each trial's Tune driver (it starts and waits on the trial's Ray Train run)."""
    placement: str = "PACK"
    """How a trial's workers are placed: PACK (fewest nodes) or SPREAD (across nodes)."""
    max_failures: int = 2
    """Worker failures a Ray Train run recovers from (from its last checkpoint)."""
    scheduler: Scheduler = field(default_factory=Scheduler)
    runner: str = "auto"
    """How a trial runs its post-tuning: ``train`` (a Ray Train run, any number of workers),
    ``inline`` (in the trial's own Tune process: one worker, no Ray Train start-up per trial), or
    ``auto`` (inline for one worker per trial, Ray Train for more)."""

    @property
    def trial_runner(self) -> str:
        if self.runner == "auto":
            return "inline" if self.workers_per_trial == 1 else "train"
        return self.runner


@dataclass
class SearchSpec:
    """A validated search space."""

    path: Path
    name: str
    task: str
    task_options: dict[str, Any]
    task_seed: int
    checkpoint: str | None
    pretrain_if_missing: bool
    metric: str
    mode: str
    budget: Budget
    posttune: dict[str, Any]
    """Fixed post-tuning settings (dotted keys), shared by every trial."""
    params: list[Param]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Define-by-run space for Optuna: suggest each active parameter in file order."""
        chosen: dict[str, Any] = {}
        for p in self.params:
            if not p.active(chosen):
                continue
            if p.type == "categorical":
                chosen[p.key] = trial.suggest_categorical(p.key, p.choices)
            elif p.type == "int":
                chosen[p.key] = trial.suggest_int(p.key, int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
            else:
                chosen[p.key] = trial.suggest_float(p.key, p.low, p.high, log=p.log, step=p.step)
        return chosen

    def trial_config(self, sampled: dict[str, Any]) -> PostTuneConfig:
        """The full post-tuning config of one trial: task defaults, fixed settings, sampled values."""
        from surrogate_search.tasks import get_task

        task = get_task(self.task, seed=self.task_seed, **self.task_options)
        return PostTuneConfig.for_task(task, {**self.posttune, **sampled})


def known_choices() -> dict[str, list[str]]:
    """Settings whose values are registry names: a typo is caught before the search starts."""
    from surrogate_search.sampling import SAMPLERS, SOURCES
    from surrogate_search.surrogates import list_methods
    from surrogate_search.surrogates.anyloss import confusion_matrix_metrics
    from surrogate_search.surrogates.encoders import ENCODERS

    return {"method": list_methods(), "surrogate.encoder": ENCODERS.names(), "sampling.strategy": SAMPLERS.names(),
            "sampling.source": list(SOURCES), "anyloss.metric": confusion_matrix_metrics()}


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"budget.trials": 2, "posttune.steps": 20}`` reaches into the file's sections."""
    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        # The space's own keys are dotted post-tuning keys: `space.surrogate.width.high=96`.
        if parts[0] == "space" and len(parts) > 2:
            parts = ["space", ".".join(parts[1:-1]), parts[-1]]
        elif parts[0] == "posttune" and len(parts) > 1:
            parts = ["posttune", ".".join(parts[1:])]
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return out


def load_space(path: str | Path, overrides: dict[str, Any] | None = None) -> SearchSpec:
    """Read ``path`` (YAML), apply ``overrides`` (dotted keys) and validate everything."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no search space at {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpaceError(f"{path}: not valid YAML{_where(exc)}") from exc
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return _Validator(path).spec(apply_overrides(raw, overrides or {}))


def _where(exc: yaml.YAMLError) -> str:
    """Where and why, on one line (PyYAML's own message spans several and quotes the file twice):
    ``" at line 3, column 6: expected ',' or '}', but got ':' (while parsing a flow mapping that
    starts at line 2, column 7)"``."""
    mark, context, context_mark = (getattr(exc, name, None) for name in ("problem_mark", "context", "context_mark"))
    if mark is None:
        return f": {' '.join(str(exc).split())}"
    where = f" at line {mark.line + 1}, column {mark.column + 1}: {getattr(exc, 'problem', None) or 'cannot be parsed'}"
    if context:
        where += f" ({context}" + (f" that starts at line {context_mark.line + 1}, column {context_mark.column + 1})"
                                   if context_mark is not None else ")")
    return where


class _Validator:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, value: Any, why: str) -> SpaceError:
        return SpaceError(f"{self.path}: {key} = {value!r}: {why}")

    def section(self, raw: dict[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
        value = raw.get(key) or {}
        if not isinstance(value, dict):
            raise self.fail(key, value, "expected a mapping")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}", value[unknown[0]], f"unknown key; known: {sorted(allowed)}")
        return value

    def number(self, key: str, value: Any, *, integer: bool = False, minimum: float = 0.0, strict: bool = True) -> Any:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if integer:
            ok = ok and float(value).is_integer()
        if not ok or (value <= minimum if strict else value < minimum):
            kind = "an integer" if integer else "a number"
            raise self.fail(key, value, f"must be {kind} {'>' if strict else '>='} {minimum:g}")
        return int(value) if integer else float(value)

    def check_key(self, where: str, key: str, value: Any) -> None:
        """A post-tuning key that a config accepts; a moved or unknown one fails with the reason."""
        try:
            PostTuneConfig.check_key(key)
        except ValueError as exc:
            raise self.fail(where, value, str(exc).removeprefix("post-tuning config: ")) from exc

    def posttune(self, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.fail("posttune", raw, "expected a mapping of post-tuning settings")
        fixed = flatten(raw)
        for key, value in fixed.items():
            self.check_key(f"posttune.{key}", key, value)
        return fixed

    def spec(self, raw: dict[str, Any]) -> SearchSpec:
        unknown = sorted(set(raw) - TOP_KEYS)
        if unknown:
            raise self.fail(unknown[0], raw[unknown[0]], f"unknown key; known: {sorted(TOP_KEYS)}")
        task = self.section(raw, "task", TASK_KEYS)
        task_name, options, seed = task.get("name"), task.get("options") or {}, task.get("seed", 0)
        from surrogate_search.registry import UnknownNameError
        from surrogate_search.tasks import get_task

        try:
            task_obj = get_task(task_name, seed=seed, **options)
        except (UnknownNameError, ValueError, TypeError) as exc:
            bad_key, bad = ("task.options", options) if "option" in str(exc) or "dataset" in str(exc) else ("task.name", task_name)
            raise self.fail(bad_key, bad, str(exc)) from exc

        objective = self.section(raw, "objective", OBJECTIVE_KEYS)
        metric = objective.get("metric", f"val/{task_obj.metric_name}")
        if not isinstance(metric, str) or not metric.startswith("val/"):
            raise self.fail("objective.metric", metric, f"expected a validation metric such as 'val/{task_obj.metric_name}'")
        default_mode = "max" if task_obj.metric.higher_is_better else "min"
        mode = objective.get("mode", default_mode)
        if mode not in ("min", "max"):
            raise self.fail("objective.mode", mode, "must be 'min' or 'max'")
        if metric == f"val/{task_obj.metric_name}" and mode != default_mode:
            raise self.fail("objective.mode", mode, f"{task_obj.metric_name} is {'higher' if default_mode == 'max' else 'lower'} "
                            f"is better, so the mode must be {default_mode!r}")

        budget = self.budget(self.section(raw, "budget", BUDGET_KEYS))
        fixed = self.posttune(raw.get("posttune") or {})
        params = self.params(raw.get("space") or {})
        spec = SearchSpec(path=self.path, name=str(raw.get("name") or self.path.stem), task=task_obj.name,
                          task_options=dict(options), task_seed=int(seed), checkpoint=raw.get("checkpoint"),
                          pretrain_if_missing=bool(raw.get("pretrain_if_missing", True)), metric=metric, mode=mode,
                          budget=budget, posttune=fixed, params=params)
        self.check_configs(spec)
        return spec

    def budget(self, raw: dict[str, Any]) -> Budget:
        b = Budget()
        for key in ("trials", "concurrency", "workers_per_trial"):
            if key in raw:
                setattr(b, key, self.number(f"budget.{key}", raw[key], integer=True))
        if "max_failures" in raw:
            b.max_failures = self.number("budget.max_failures", raw["max_failures"], integer=True, strict=False)
        if "cpus_per_worker" in raw:
            b.cpus_per_worker = self.number("budget.cpus_per_worker", raw["cpus_per_worker"])
        for key in ("gpus_per_worker", "driver_cpus"):
            if key in raw:
                setattr(b, key, self.number(f"budget.{key}", raw[key], strict=False))
        if "placement" in raw:
            if raw["placement"] not in PLACEMENTS:
                raise self.fail("budget.placement", raw["placement"], f"unknown placement; known: {list(PLACEMENTS)}")
            b.placement = raw["placement"]
        if "runner" in raw:
            if raw["runner"] not in RUNNERS:
                raise self.fail("budget.runner", raw["runner"], f"unknown runner; known: {list(RUNNERS)}")
            b.runner = raw["runner"]
        if b.runner == "inline" and b.workers_per_trial > 1:
            raise self.fail("budget.runner", b.runner, f"an inline trial runs one worker, but budget.workers_per_trial "
                            f"is {b.workers_per_trial}: use runner 'train' (or 'auto') for several workers per trial")
        sched = self.section(raw, "scheduler", SCHEDULER_KEYS) if "scheduler" in raw else {}
        if "type" in sched:
            if sched["type"] not in SCHEDULERS:
                raise self.fail("budget.scheduler.type", sched["type"], f"unknown scheduler; known: {list(SCHEDULERS)}")
            b.scheduler.type = sched["type"]
        if "grace_period" in sched:
            b.scheduler.grace_period = self.number("budget.scheduler.grace_period", sched["grace_period"], integer=True)
        if "reduction_factor" in sched:
            b.scheduler.reduction_factor = self.number("budget.scheduler.reduction_factor", sched["reduction_factor"],
                                                       integer=True, minimum=1)
        return b

    def params(self, raw: Any) -> list[Param]:
        if not isinstance(raw, dict) or not raw:
            raise self.fail("space", raw, "expected a non-empty mapping of post-tuning keys to distributions")
        choices = known_choices()
        params: list[Param] = []
        for key, dist in raw.items():
            where = f"space.{key}"
            self.check_key(where, key, dist)
            if not isinstance(dist, dict):
                raise self.fail(where, dist, "expected a mapping such as {low: 1e-4, high: 1e-2, log: true} or {choices: [...]}")
            unknown = sorted(set(dist) - PARAM_KEYS)
            if unknown:
                raise self.fail(f"{where}.{unknown[0]}", dist[unknown[0]], f"unknown key; known: {sorted(PARAM_KEYS)}")
            kind = dist.get("type", "categorical" if "choices" in dist else None)
            if kind not in ("float", "int", "categorical"):
                raise self.fail(f"{where}.type", kind, "must be float, int or categorical")
            p = Param(key=key, type=kind, log=bool(dist.get("log", False)), when=self.when(where, dist.get("when"), params))
            if kind == "categorical":
                values = dist.get("choices")
                if not isinstance(values, list) or not values:
                    raise self.fail(f"{where}.choices", values, "expected a non-empty list")
                for value in values:
                    if key in choices and choices[key] and value not in choices[key]:
                        raise self.fail(f"{where}.choices", value, f"unknown choice; known: {choices[key]}")
                p.choices = values
            else:
                for bound in ("low", "high"):
                    value = dist.get(bound)
                    if not isinstance(value, (int, float)) or isinstance(value, bool) or (kind == "int" and not float(value).is_integer()):
                        raise self.fail(f"{where}.{bound}", value, f"expected {'an integer' if kind == 'int' else 'a number'}")
                p.low, p.high = dist["low"], dist["high"]
                if p.low > p.high:
                    raise self.fail(f"{where}.low", p.low, f"low must be <= high ({p.high!r})")
                if p.log and p.low <= 0:
                    raise self.fail(f"{where}.low", p.low, "a log-scale range needs low > 0")
                if "step" in dist:
                    p.step = self.number(f"{where}.step", dist["step"], integer=kind == "int")
                    if p.log:
                        raise self.fail(f"{where}.step", dist["step"], "step and log cannot be combined")
            params.append(p)
        return params

    def when(self, where: str, raw: Any, earlier: list[Param]) -> dict[str, list[Any]]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise self.fail(f"{where}.when", raw, "expected a mapping {earlier_key: value or [values]}")
        out = {}
        for key, values in raw.items():
            parent = next((p for p in earlier if p.key == key), None)
            if parent is None:
                raise self.fail(f"{where}.when.{key}", values, "conditions may only name a parameter listed earlier in the space")
            values = values if isinstance(values, list) else [values]
            for value in values:
                if parent.type == "categorical" and value not in parent.choices:
                    raise self.fail(f"{where}.when.{key}", value, f"not one of {key}'s choices {parent.choices}")
            out[key] = values
        return out

    def check_configs(self, spec: SearchSpec) -> None:
        # Each fixed setting and each end of each range must make a valid post-tuning config: a
        # negative learning rate or a width of 0 fails here, not in trial 17 an hour from now.
        choices = known_choices()
        for key, value in spec.posttune.items():
            if key in choices and choices[key] and value not in choices[key]:
                raise self.fail(f"posttune.{key}", value, f"unknown choice; known: {choices[key]}")
        try:
            spec.trial_config({})
        except ValueError as exc:
            raise SpaceError(f"{self.path}: posttune: {exc}") from exc
        for p in spec.params:
            for value in (p.choices if p.type == "categorical" else [p.low, p.high]):
                try:
                    spec.trial_config({p.key: value})
                except ValueError as exc:
                    raise self.fail(f"space.{p.key}", value, str(exc)) from exc
