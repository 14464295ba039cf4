"""Post-tuning as a Ray Train run: N workers (CPU processes with gloo, or GPUs with NCCL), each
running :func:`surrogate_search.posttune.posttune` unchanged on its shard of the training split.

Every evaluation is reported through ``ray.train.report`` with a checkpoint of the loop's full
state, so a run whose worker dies restarts its worker group (``FailureConfig``) and carries on
from the last evaluation. A run that diverges is not a failure: the same settings would diverge
again, so its last row (:func:`diverged_row`) reports the last finite evaluation and why, and the
run ends normally, without retries (its trial then reaches Optuna as PRUNED). A run with the same ``name`` and ``storage_path`` resumes its own
checkpoints, which is how a restarted Tune trial picks up where it stopped.

:func:`run_inline` runs the same loop, with the same reports, in the calling Tune trial's own
process: a one-worker trial then skips Ray Train's per-run start-up (a controller and a worker
process, each importing torch), which costs more than a short trial itself on a small machine.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray.train import UserCallback

from surrogate_search.checkpoint import BaseCheckpoint
from surrogate_search.config import PostTuneConfig
from surrogate_search.search.outcome import DIVERGED_KEY
from surrogate_search.search.storage import Location

STATE_FILE = "loop_state.pt"
METRICS_LOG = "metrics.jsonl"


@dataclass
class TrainPlan:
    """How one post-tuning run is spread over Ray Train workers."""

    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    placement: str = "PACK"
    max_failures: int = 2

    def scaling_config(self) -> Any:
        from ray.train import ScalingConfig

        resources: dict[str, float] = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker:
            resources["GPU"] = self.gpus_per_worker
        return ScalingConfig(num_workers=self.num_workers, use_gpu=self.gpus_per_worker > 0,
                             resources_per_worker=resources, placement_strategy=self.placement)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """What each Ray Train worker runs: build a WorkerContext from the Train context, resume from
    the latest Ray Train checkpoint if there is one, run the loop, report the final metrics."""
    import ray
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    from surrogate_search.posttune import PostTuneDiverged, WorkerContext, posttune

    config: PostTuneConfig = loop_config["config"]
    checkpoint: BaseCheckpoint = loop_config["checkpoint"]
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(loop_config.get("threads_per_worker", 1))))

    # Which nodes this run spans: every worker's node id and pid, gathered once, reported by rank 0.
    nodes = {ray.get_runtime_context().get_node_id()}
    if world_size > 1 and dist.is_initialized():
        gathered: list[Any] = [None] * world_size
        dist.all_gather_object(gathered, (ray.get_runtime_context().get_node_id(), os.getpid()))
        node_ids = [node for node, _ in gathered]
        pids = [pid for _, pid in gathered]
    else:
        node_ids, pids = list(nodes), [os.getpid()]
    nodes = set(node_ids)

    resume_state = None
    latest = ray.train.get_checkpoint()
    if latest is not None:
        with latest.as_directory() as folder:
            resume_state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)

    last_state: list[Any] = []

    extra = dict(loop_config.get("report_extra") or {})

    def report(metrics: dict[str, float], state_fn: Any) -> None:
        last_state[:] = [state_fn]
        row = {**progress_row(metrics, config, nodes=len(nodes), workers=world_size), **extra}
        # Every rank reports (ray.train.report is a barrier); only rank 0 writes the checkpoint,
        # since the replicas are identical after DDP's and the surrogate's gradient averaging.
        if rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(state_fn(), Path(folder) / STATE_FILE)
                ray.train.report({**row, "pids": pids, "node_ids": node_ids},
                                 checkpoint=ray.train.Checkpoint.from_directory(folder))
        else:
            ray.train.report(row)

    context = WorkerContext(rank=rank, world_size=world_size, device=ray.train.torch.get_device(),
                            prepare_model=ray.train.torch.prepare_model if world_size > 1 else (lambda m: m),
                            report=report, resume_state=resume_state)
    try:
        result = posttune(config, checkpoint, cache_dir=loop_config.get("cache_dir"), context=context)
    except PostTuneDiverged as exc:  # every worker stops at the same check, so every one reports this once
        row = {**diverged_row(exc, config, nodes=len(nodes), workers=world_size), **extra}
        ray.train.report({**row, "pids": pids, "node_ids": node_ids} if rank == 0 else row)
        return
    final = {**final_row(result, nodes=len(nodes), workers=world_size), **extra}
    # The final row carries a checkpoint too (the finished loop's state), so that Ray Train's
    # ``Result.metrics`` -- the metrics of the latest checkpoint -- are the final ones, and a
    # restart after this point finishes at once instead of repeating the run.
    if rank == 0 and last_state:
        with tempfile.TemporaryDirectory() as folder:
            torch.save(last_state[0](), Path(folder) / STATE_FILE)
            ray.train.report({**final, "pids": pids, "node_ids": node_ids},
                             checkpoint=ray.train.Checkpoint.from_directory(folder))
    else:
        ray.train.report(final)


def progress_row(metrics: dict[str, float], config: PostTuneConfig, *, nodes: int, workers: int) -> dict[str, float]:
    """What every evaluation reports (to Ray Train or Tune, metrics.jsonl and MLflow)."""
    return {**metrics, "progress": metrics["step"] / config.steps, "nodes": float(nodes), "workers": float(workers),
            "final": 0.0}


def final_row(result: Any, *, nodes: int, workers: int) -> dict[str, float]:
    """The last report of a finished run: the selected model's validation and test metrics."""
    return {"step": float(result.steps), "best_step": float(result.best_step), "progress": 1.0, "final": 1.0,
            "nodes": float(nodes), "workers": float(workers), "seconds": result.seconds,
            **{f"val/{k}": v for k, v in result.val.items()}, **{f"test/{k}": v for k, v in result.test.items()}}


def diverged_row(diverged: Any, config: PostTuneConfig, *, nodes: int, workers: int) -> dict[str, Any]:
    """The last report of a run that diverged (a :class:`~surrogate_search.posttune.PostTuneDiverged`):
    its last finite evaluation again, ``diverged_step``, and why (``DIVERGED_KEY``, a string). Not
    final: the trial stopped early, so it reaches Optuna as PRUNED."""
    last = {k: v for k, v in diverged.last_evaluation.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    return {**progress_row({"step": 0.0, **last}, config, nodes=nodes, workers=workers),
            "diverged_step": float(diverged.step), DIVERGED_KEY: str(diverged)}


class MetricsLog(UserCallback):
    """Runs in the Ray Train controller (which outlives failed workers), or in an inline trial, and
    adds every report of rank 0 to ``<run folder>/metrics.jsonl``: one row per evaluation plus the
    final row, however many times the workers were restarted.

    On a disk the row is appended. An object in a bucket cannot be appended to, so there the whole
    file is put again with the new row at its end: the rows it held (read once, when a restarted
    trial writes its first row) plus this run's. A put replaces the object at once, so a reader
    (``surrogate-search sync``) sees every row up to some report, never half a row; one writer per
    trial (rank 0) means no row is lost to a concurrent put; and the file is the same one-row-per-
    report log as on a disk, so sync's replay (each row once: :mod:`surrogate_search.tracking.replay`)
    reads it alike. A trial reports tens of rows of a few hundred bytes: putting them again costs a
    request per evaluation, as a checkpoint does."""

    def __init__(self, file: str | Path | Location) -> None:
        self.file = Location.of(file)
        self._text: str | None = None

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        line = json.dumps({**metrics[0], "checkpoint": checkpoint is not None}) + "\n"
        if self.file.appendable:
            self.file.append_text(line)
            return
        if self._text is None:
            self._text = self.file.read_text() if self.file.is_file() else ""
        self._text += line
        self.file.write_text(self._text)


def read_metrics_log(run_dir: str | Path | Location) -> list[dict[str, Any]]:
    """The rows of ``<run_dir>/metrics.jsonl`` (on a disk or in a bucket); none when it is not there."""
    file = Location.of(run_dir) / METRICS_LOG
    if not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def run_posttune(config: PostTuneConfig, checkpoint: BaseCheckpoint, *, name: str, storage_path: str | Path | Location,
                 plan: TrainPlan | None = None, cache_dir: str | None = None, callbacks: list[Any] | None = None,
                 report_extra: dict[str, Any] | None = None) -> Any:
    """Run one post-tuning as a ``TorchTrainer`` and return Ray Train's ``Result``.

    ``name`` + ``storage_path`` (a folder or a bucket URI, given to Ray unchanged) identify the run:
    calling this again with the same pair resumes from the run's latest checkpoint. The metrics of every evaluation are in
    ``<storage_path>/<name>/metrics.jsonl``. ``report_extra`` joins every report (a tracked
    trial's MLflow run id, for the searcher).

    Example: ``run_posttune(cfg, ckpt, name="trial_0001", storage_path="runs/search", plan=TrainPlan(num_workers=2))``
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    plan = plan or TrainPlan()
    storage = Location.of(storage_path)
    run_config = RunConfig(name=name, storage_path=storage.uri,
                           failure_config=FailureConfig(max_failures=plan.max_failures),
                           checkpoint_config=CheckpointConfig(num_to_keep=2),
                           callbacks=[MetricsLog(storage / name / METRICS_LOG), *(callbacks or [])])
    loop_config = {"config": config, "checkpoint": checkpoint, "cache_dir": cache_dir,
                   "threads_per_worker": max(1, int(plan.cpus_per_worker)), "report_extra": dict(report_extra or {})}
    trainer = TorchTrainer(train_loop_per_worker, train_loop_config=loop_config,
                           scaling_config=plan.scaling_config(),
                           # gloo for CPU workers, NCCL when each worker has a GPU
                           torch_config=TorchConfig(backend="nccl" if plan.gpus_per_worker else "gloo"),
                           run_config=run_config)
    return trainer.fit()


def run_inline(config: PostTuneConfig, checkpoint: BaseCheckpoint, *, name: str, storage_path: str | Path | Location,
               cache_dir: str | None = None, callbacks: list[Any] | None = None,
               report_extra: dict[str, Any] | None = None) -> Any:
    """Run one post-tuning in this process, from inside a Ray Tune trial, as one worker.

    Reports go to Tune (``tune.report``, each evaluation with a Tune checkpoint of the loop's
    state: Tune's ``FailureConfig`` restarts a failed trial from it), to
    ``<storage_path>/<name>/metrics.jsonl`` and to ``callbacks`` (Ray Train ``UserCallback`` objects,
    called as the Train controller would); ``report_extra`` joins every report. Returns the
    :class:`~surrogate_search.posttune.PostTuneResult`, or the
    :class:`~surrogate_search.posttune.PostTuneDiverged` of a run that diverged (reported, not raised).
    """
    from ray import tune

    from surrogate_search.posttune import PostTuneDiverged, WorkerContext, posttune

    sinks = [MetricsLog(Location.of(storage_path) / name / METRICS_LOG), *(callbacks or [])]
    resume_state = None
    latest = tune.get_checkpoint()
    if latest is not None:
        with latest.as_directory() as folder:
            resume_state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    pid = os.getpid()

    def send(row: dict[str, float], state: dict[str, Any] | None) -> None:
        # The log and MLflow first: a trial that the scheduler stops ends inside tune.report.
        for sink in sinks:
            sink.after_report(None, [{**row, "pids": [pid]}], state is not None)
        if state is None:
            tune.report(row)
        else:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(state, Path(folder) / STATE_FILE)
                tune.report(row, checkpoint=tune.Checkpoint.from_directory(folder))

    extra = dict(report_extra or {})

    def report(metrics: dict[str, float], state_fn: Any) -> None:
        send({**progress_row(metrics, config, nodes=1, workers=1), **extra}, state_fn())

    try:
        result = posttune(config, checkpoint, cache_dir=cache_dir,
                          context=WorkerContext(report=report, resume_state=resume_state))
    except PostTuneDiverged as exc:  # a result, not a failure: Tune must not retry it
        send({**diverged_row(exc, config, nodes=1, workers=1), **extra}, None)
        return exc
    send({**final_row(result, nodes=1, workers=1), **extra}, None)
    return result
