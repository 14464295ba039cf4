"""Ray Tune + Optuna over a search space: each trial is a post-tuning run, a Ray Train run for
several workers, or inline in the trial's own (reused) Tune process for one (``budget.runner``).

One search lives in one folder, ``<storage>/<space name>/``::

    optuna.db          the Optuna study (TPE; every trial's parameters, intermediate values, state)
    tune_<n>/          Ray Tune's experiment folder of the n-th (re)start of the search (and the
                       Tune checkpoints of inline trials)
    train/trial_0003/  the run of Optuna trial 3: metrics.jsonl, and a Ray Train run's checkpoints
    best_config.yaml   the best trial's post-tuning settings, for ``surrogate-search compare --from-search``
    mlflow_search_id   the key of the search's MLflow parent run (with tracking on)

The Optuna study is the search's memory: ``resume=True`` reloads it, keeps every finished trial
(TPE learns from them; they are not run again), marks trials left RUNNING by an interrupted search
as FAILED and re-queues their parameters; a re-queued trial keeps its run name, so a Ray Train
trial continues from that run's last checkpoint (an inline one starts over). Trials that ASHA
stops early reach Optuna as PRUNED, never as COMPLETE with their early (worse) value.

Example::

    spec = load_space("search_spaces/tabular_f1_smoke.yaml")
    outcome = run_search(spec, storage="runs/search")
    outcome.best_config  # {"method": "deep_embedding", "surrogate": {...}, ...}
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from surrogate_search.search.space import Budget, SearchSpec

if TYPE_CHECKING:  # imports Ray Train and MLflow: only when a search is tracked
    from surrogate_search.tracking.search import SearchTracking

log = logging.getLogger(__name__)

STUDY_DB = "optuna.db"
BEST_CONFIG = "best_config.yaml"
TRAIN_DIR = "train"
RUN_KEY = "__train_run"
"""Config key through which the searcher tells a trial the name of its Ray Train run."""
FINAL_KEY = "final"
"""1.0 in the last row a post-tuning run reports; a trial whose last row lacks it was stopped early."""

TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
"""Environment of the search's Ray workers (a value already set in this process wins). A Ray Train
controller takes in one worker report per poll, every 2 s by default: a trial's last reports,
and so its end, waited seconds on the poll."""


def train_run_name(trial: Any) -> str:
    """The Ray Train run (and MLflow child run) of an Optuna trial: ``trial_0003``, or the name a
    re-queued trial inherited from the interrupted one."""
    return trial.user_attrs.get("train_run") or f"trial_{trial.number:04d}"


class ResourceError(ValueError):
    """A trial can never fit the cluster; the message shows the arithmetic."""


@dataclass
class ResourcePlan:
    cpus_per_trial: float
    gpus_per_trial: float
    cluster_cpus: float
    cluster_gpus: float
    concurrency: int
    runner: str = "train"

    def describe(self) -> str:
        gpus = f", {self.gpus_per_trial:g} GPUs" if self.gpus_per_trial else ""
        how = "a Ray Train run" if self.runner == "train" else "post-tuning in the trial's own process (inline)"
        return (f"{self.concurrency} trial(s) at a time, each {how}: each needs {self.cpus_per_trial:g} CPUs{gpus}; "
                f"the cluster has {self.cluster_cpus:g} CPUs, {self.cluster_gpus:g} GPUs")


def plan_resources(spec: SearchSpec, cluster: dict[str, float]) -> ResourcePlan:
    """How many trials run at once. A Ray Train trial holds ``driver_cpus`` for its Tune driver
    plus ``workers_per_trial x cpus_per_worker`` (and GPUs) for its Ray Train workers, which Tune
    does not see: without this limit, concurrent trials could each hold a driver and wait forever
    for workers. An inline trial is its own single worker. Fails at once when a single trial can
    never fit."""
    b = spec.budget
    driver = b.driver_cpus if b.trial_runner == "train" else 0.0
    cpus = driver + b.workers_per_trial * b.cpus_per_worker
    gpus = b.workers_per_trial * b.gpus_per_worker
    have_cpus, have_gpus = float(cluster.get("CPU", 0.0)), float(cluster.get("GPU", 0.0))
    arithmetic = (f"a trial needs {driver:g} driver CPU + {b.workers_per_trial} workers x "
                  f"{b.cpus_per_worker:g} CPUs = {cpus:g} CPUs")
    if cpus > have_cpus + 1e-9:
        raise ResourceError(f"{spec.path}: {arithmetic}, but the cluster has {have_cpus:g} CPUs, so no trial can "
                            f"ever start. Lower budget.workers_per_trial or budget.cpus_per_worker, or add nodes.")
    if gpus > have_gpus + 1e-9:
        raise ResourceError(f"{spec.path}: a trial needs {b.workers_per_trial} workers x {b.gpus_per_worker:g} GPUs = "
                            f"{gpus:g} GPUs, but the cluster has {have_gpus:g} GPUs. Lower budget.gpus_per_worker "
                            f"(0 runs on CPUs) or add GPU nodes.")
    fits = math.floor(have_cpus / cpus + 1e-9)
    if gpus:
        fits = min(fits, math.floor(have_gpus / gpus + 1e-9))
    return ResourcePlan(cpus, gpus, have_cpus, have_gpus, max(1, min(b.concurrency, fits)), b.trial_runner)


def _searcher_class() -> type:
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    class PrunedAwareOptunaSearch(OptunaSearch):
        """OptunaSearch that (1) names each trial's Ray Train run after its Optuna trial (kept when the
        trial is re-queued on resume) and (2) tells Optuna PRUNED for trials stopped by the scheduler:
        stock OptunaSearch tells COMPLETE with the last, early value, which misleads TPE."""

        def suggest(self, trial_id: str) -> dict | None:
            params = super().suggest(trial_id)
            if params is None:
                return None
            ot_trial = self._ot_trials[trial_id]
            run = train_run_name(ot_trial)
            ot_trial.set_user_attr("train_run", run)
            return {**params, RUN_KEY: run}

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            stopped_early = (not error and result is not None and trial_id in self._ot_trials
                             and trial_id not in self._completed_trials and not result.get(FINAL_KEY))
            if not stopped_early:
                return super().on_trial_complete(trial_id, result=result, error=error)
            ot_trial = self._ot_trials[trial_id]
            # The result that made the scheduler stop the trial never reaches on_trial_result;
            # report it, so that TPE ranks the pruned trial by how far it got and how well.
            if result.get(self.metric) is not None:
                ot_trial.report(result[self.metric], int(result.get("training_iteration", 0)))
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
            self._completed_trials.add(trial_id)

    return PrunedAwareOptunaSearch


def trial_trainable(config: dict[str, Any], *, spec: SearchSpec, checkpoint: Any, train_dir: str,
                    cache_dir: str | None = None, tracking: SearchTracking | None = None) -> None:
    """One Tune trial: build its post-tuning config and run it, named after the Optuna trial, as a
    Ray Train run (forwarding every evaluation to Tune with ``TuneReportCallback``) or inline (see
    ``budget.runner``); with ``tracking`` (a :class:`~surrogate_search.tracking.search.SearchTracking`),
    every evaluation also goes to the trial's MLflow run."""
    from surrogate_search.search.train import TrainPlan, run_inline, run_posttune

    sampled = {k: v for k, v in config.items() if k != RUN_KEY}
    run = config[RUN_KEY]
    b = spec.budget
    post_config = spec.trial_config(sampled)
    with contextlib.ExitStack() as stack:
        callbacks = []
        if tracking is not None:
            _, to_mlflow = stack.enter_context(tracking.trial(run, post_config))
            callbacks.append(to_mlflow)
        if b.trial_runner == "inline":
            run_inline(post_config, checkpoint, name=run, storage_path=train_dir, cache_dir=cache_dir,
                       callbacks=callbacks)
            return
        from ray.tune.integration.ray_train import TuneReportCallback

        plan = TrainPlan(num_workers=b.workers_per_trial, cpus_per_worker=b.cpus_per_worker,
                         gpus_per_worker=b.gpus_per_worker, placement=b.placement, max_failures=b.max_failures)
        run_posttune(post_config, checkpoint, name=run, storage_path=train_dir, plan=plan,
                     cache_dir=cache_dir, callbacks=[TuneReportCallback(), *callbacks])


@dataclass
class SearchOutcome:
    """What a finished search found."""

    search_dir: Path
    metric: str
    mode: str
    best_value: float | None
    best_params: dict[str, Any]
    best_config: dict[str, Any]
    """Full post-tuning settings of the best trial (what ``best_config.yaml`` holds)."""
    best_run: str | None
    states: dict[str, int] = field(default_factory=dict)
    """Optuna trial states over the whole study: ``{"COMPLETE": 3, "PRUNED": 1}``."""
    requeued: list[int] = field(default_factory=list)
    """Optuna trial numbers found RUNNING on resume, marked FAILED and re-queued."""

    def summary(self) -> str:
        states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.states.items()))
        if self.best_value is None:
            return f"search {self.search_dir}: no trial finished ({states})"
        params = "\n".join(f"  {k}: {v!r}" for k, v in sorted(self.best_params.items()))
        return (f"search {self.search_dir}: {states}\n"
                f"best trial {self.best_run}: {self.metric} = {self.best_value:.4f} ({self.mode})\n{params}\n"
                f"best configuration: {self.search_dir / BEST_CONFIG}")


def open_study(spec: SearchSpec, search_dir: Path) -> Any:
    import optuna

    storage = optuna.storages.RDBStorage(f"sqlite:///{(search_dir / STUDY_DB).resolve()}")
    return optuna.create_study(storage=storage, study_name=spec.name, load_if_exists=True,
                               direction="maximize" if spec.mode == "max" else "minimize"), storage


def requeue_interrupted(study: Any) -> list[int]:
    """Trials left RUNNING by an interrupted search: mark them FAILED and queue their parameters
    again, under the same Ray Train run name, so they continue from their last checkpoint."""
    from optuna.trial import TrialState

    requeued = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"train_run": train_run_name(trial)})
        requeued.append(trial.number)
    return requeued


def run_search(spec: SearchSpec, *, storage: str | Path = "runs/search", resume: bool = False,
               address: str | None = None, num_cpus: int | None = None, cache_dir: str | None = None,
               seed: int = 0, points_to_evaluate: list[dict[str, Any]] | None = None,
               verbose: int = 1,
               tracking_uri: str | None = None, experiment: str | None = None) -> SearchOutcome:
    """Search ``spec`` with Ray Tune (OptunaSearch/TPE under a ConcurrencyLimiter, ASHA) until the
    study holds ``spec.budget.trials`` finished (complete or pruned) trials.

    ``address``: a running cluster (``"auto"``, ``"ray://..."``, or ``RAY_ADDRESS``); ``None``
    starts Ray in this process with ``num_cpus`` logical CPUs (default: this machine's cores).
    ``points_to_evaluate``: parameter sets to try first (Optuna's enqueued trials).
    ``tracking_uri``: record the search in MLflow (a parent run, a child run per trial; see
    :mod:`surrogate_search.tracking.search`) in ``experiment`` (default: the task's); ``None``
    records nothing. The store is checked before Ray starts.
    """
    import optuna
    import ray
    from optuna.trial import TrialState
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from surrogate_search.compare import ensure_base_checkpoint
    from surrogate_search.tasks import get_task

    search_dir = (Path(storage) / spec.name).resolve()
    if (search_dir / STUDY_DB).exists() and not resume:
        raise FileExistsError(f"{search_dir} already holds a search: pass --resume to continue it, "
                              f"or --storage to start a new one elsewhere")
    search_dir.mkdir(parents=True, exist_ok=True)
    if tracking_uri is not None:
        from surrogate_search.tracking import check_tracking_store, resolve_tracking_uri

        tracking_uri = resolve_tracking_uri(tracking_uri)  # absolute: Tune changes trials' directories
        check_tracking_store(tracking_uri)

    address = address or os.environ.get("RAY_ADDRESS")
    started_ray = False
    if not ray.is_initialized():
        if address:
            # Ship this library to every node (merged with a job's own runtime env, e.g. its
            # working_dir): cluster nodes then need only the dependencies, not this repo.
            import surrogate_search

            ray.init(address=address, runtime_env={"py_modules": [str(Path(surrogate_search.__file__).parent)],
                                                   "env_vars": worker_env()})
        else:
            start_local_ray(num_cpus)
        started_ray = True
    try:
        plan = plan_resources(spec, ray.cluster_resources())
        print(f"resources: {plan.describe()}", flush=True)
        task = get_task(spec.task, seed=spec.task_seed, **spec.task_options)
        checkpoint = ensure_base_checkpoint(task, spec.checkpoint, cache_dir=cache_dir,
                                            pretrain_if_missing=spec.pretrain_if_missing)

        tracking = None
        if tracking_uri is not None:
            from surrogate_search.tracking.search import SearchTracking

            tracking = SearchTracking.start(spec, task, search_dir, tracking_uri, experiment)
            print(f"MLflow: experiment {tracking.experiment!r}, search run {tracking.parent_run_id} in {tracking_uri}",
                  flush=True)

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study, rdb = open_study(spec, search_dir)
        requeued = requeue_interrupted(study) if resume else []
        for number in requeued:
            print(f"resume: trial {number} was RUNNING when the search stopped: marked FAILED, "
                  f"its parameters re-queued", flush=True)
        finished = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        remaining = spec.budget.trials - len(finished)
        if resume:
            print(f"resume: {len(finished)} finished trial(s) kept, {max(0, remaining)} to run", flush=True)
        if remaining > 0:
            _tune(spec, plan, rdb, search_dir, checkpoint, remaining, cache_dir=cache_dir, seed=seed,
                  points=points_to_evaluate, verbose=verbose,
                  tune=tune, schedulers=(ASHAScheduler, FIFOScheduler), limiter=ConcurrencyLimiter,
                  tracking=tracking)
        outcome = summarize(spec, study, search_dir)
        outcome.requeued = requeued
        if tracking is not None:
            tracking.finish(study, outcome)
    finally:
        if started_ray:
            ray.shutdown()
    print(outcome.summary(), flush=True)
    return outcome


def _tune(spec: SearchSpec, plan: ResourcePlan, rdb: Any, search_dir: Path, checkpoint: Any, samples: int, *,
          cache_dir: str | None, seed: int, points: list[dict[str, Any]] | None,
          verbose: int, tune: Any, schedulers: tuple, limiter: Any,
          tracking: SearchTracking | None = None) -> None:
    import optuna

    searcher = _searcher_class()(space=spec.suggest, metric=spec.metric, mode=spec.mode, study_name=spec.name,
                                 storage=rdb, sampler=optuna.samplers.TPESampler(seed=seed),
                                 points_to_evaluate=points)
    asha, fifo = schedulers
    s = spec.budget.scheduler
    # One training_iteration per evaluation, plus the final row. max_t lies one past the final row:
    # ASHA must never be the one that ends a trial which is finishing anyway, since a stopped
    # trial's Ray Train run is torn down from outside instead of returning.
    defaults = spec.trial_config({})
    reports = math.ceil(defaults.steps / defaults.eval_every) + 1
    scheduler = (asha(time_attr="training_iteration", max_t=reports + 1, grace_period=min(s.grace_period, reports),
                      reduction_factor=s.reduction_factor) if s.type == "asha" else fifo())
    restarts = sum(1 for p in search_dir.glob("tune_*") if p.is_dir())
    # Inline trials report a Tune checkpoint per evaluation and only the last two are kept, so
    # Tune snapshots its experiment state often (a few ms here) and warns about it at every one.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    trainable = tune.with_parameters(trial_trainable, spec=spec, checkpoint=checkpoint,
                                     train_dir=str(search_dir / TRAIN_DIR), cache_dir=cache_dir,
                                     tracking=tracking)
    tuner = tune.Tuner(
        tune.with_resources(trainable, trial_resources(spec.budget)),
        tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, num_samples=samples, scheduler=scheduler,
                                    search_alg=limiter(searcher, max_concurrent=plan.concurrency),
                                    # an inline trial's process runs the next trial: no new process,
                                    # no second import of torch and this library. Not for Ray Train
                                    # trials: a pruned one is still tearing its run down when Tune
                                    # tries to reuse its process (2 s), and Tune then fails the next trial.
                                    reuse_actors=spec.budget.trial_runner == "inline"),
        run_config=tune.RunConfig(name=f"tune_{restarts}", storage_path=str(search_dir), verbose=verbose,
                                  # a trial whose Train run fails for good is retried once; its Train
                                  # run (same name) resumes from its last checkpoint; an inline
                                  # trial resumes from its last Tune checkpoint
                                  failure_config=tune.FailureConfig(max_failures=1),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
    tuner.fit()


def worker_env() -> dict[str, str]:
    return {key: os.environ.get(key, value) for key, value in TRAIN_ENV.items()}


def start_local_ray(num_cpus: int | None = None, **kwargs: Any) -> None:
    """Start Ray in this process as a search does (local mode, dashboard on 127.0.0.1)."""
    import ray

    # The dashboard serves the State API, through which Ray Train removes the placement
    # group of a run whose trial ASHA stopped; without it those CPUs stay held.
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
             runtime_env={"env_vars": worker_env()}, **kwargs)


def trial_resources(budget: Budget) -> dict[str, float]:
    """What a trial's Tune process holds: an inline trial, its one worker's CPUs and GPUs; a Ray
    Train trial, its driver's (the workers are Ray Train's, in their own placement group)."""
    if budget.trial_runner == "inline":
        return {"CPU": budget.cpus_per_worker, **({"GPU": budget.gpus_per_worker} if budget.gpus_per_worker else {})}
    return driver_resources(budget.driver_cpus)


def driver_resources(cpus: float) -> dict[str, float]:
    """What a trial's Tune driver holds. A driver only waits on its Ray Train run, so
    ``driver_cpus: 0`` is allowed; Tune refuses an all-zero request, so such a driver holds 1 MiB
    of memory instead of a CPU."""
    return {"CPU": cpus} if cpus > 0 else {"CPU": 0, "memory": float(1 << 20)}


def summarize(spec: SearchSpec, study: Any, search_dir: Path) -> SearchOutcome:
    """Best trial of the study; writes ``best_config.yaml`` when there is one."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        return SearchOutcome(search_dir, spec.metric, spec.mode, None, {}, {}, None, states)
    best = (max if spec.mode == "max" else min)(complete, key=lambda t: t.value)
    config = spec.trial_config(best.params).to_dict()
    run = best.user_attrs.get("train_run")
    document = {"search": spec.name, "space": str(spec.path), "task": {"name": spec.task, "options": spec.task_options,
                                                                        "seed": spec.task_seed},
                "checkpoint": spec.checkpoint, "objective": {"metric": spec.metric, "mode": spec.mode,
                                                             "value": float(best.value)},
                "trial": best.number, "train_run": run, "params": dict(best.params), "posttune": config}
    (search_dir / BEST_CONFIG).write_text(
        f"# Best trial of {spec.path}. Compare it with the baselines:\n"
        f"#   surrogate-search compare --from-search {search_dir / BEST_CONFIG}\n"
        + yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return SearchOutcome(search_dir, spec.metric, spec.mode, float(best.value), dict(best.params), config, run, states)


def load_best_config(path: str | Path) -> dict[str, Any]:
    """Read a search's ``best_config.yaml`` (or the search folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / BEST_CONFIG
    if not path.exists():
        raise FileNotFoundError(f"no {BEST_CONFIG} at {path}: has the search finished a trial?")
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or "posttune" not in document or "task" not in document:
        raise ValueError(f"{path}: not a search's {BEST_CONFIG} (expected 'task' and 'posttune' sections)")
    return document
