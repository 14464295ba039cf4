"""The post-tuning loop: what one Ray Train worker runs, and what runs in-process on a laptop.

From a base checkpoint: warm up the surrogate on fresh pairs, then alternate ``k`` surrogate
updates with one model update on the surrogate (plus an optional weighted proxy term). Fixed
losses (proxy continuation, weighted BCE, AnyLoss) run the same loop without the surrogate part,
so every method gets the same model updates on the same batches.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from surrogate_search.checkpoint import BaseCheckpoint, load_checkpoint
from surrogate_search.config import PostTuneConfig
from surrogate_search.fidelity import FidelityProbe
from surrogate_search.metrics import ConfusionMatrixMetric
from surrogate_search.progress import Progress
from surrogate_search.sampling import PairSampler, Seen, create_sampler
from surrogate_search.selection import win_share
from surrogate_search.surrogates import SavedSurrogate, create_loss, loss_class
from surrogate_search.surrogate_training import pretrained_surrogate, surrogate_step, weights_digest
from surrogate_search.surrogates.base import PostTuneLoss, SurrogateDivergedError, check_finite, synced_finite_checks
from surrogate_search.surrogates.proxy import judged_by_confusion_matrix
from surrogate_search.tasks import Split, Splits, Task
from surrogate_search.utils import is_better, resolve_device, seed_everything

log = logging.getLogger(__name__)

Report = Callable[[dict[str, float], Callable[[], dict[str, Any]]], None]
"""Called at every evaluation with the metrics and a function that returns the loop's full state."""


@dataclass
class WorkerContext:
    """What the loop needs from whoever runs it. The defaults are a single in-process worker; a
    Ray Train worker fills in its rank, its device, DDP wrapping, reporting and a resume state."""

    rank: int = 0
    world_size: int = 1
    device: torch.device | str | None = None
    prepare_model: Callable[[nn.Module], nn.Module] = lambda model: model
    report: Report | None = None
    resume_state: dict[str, Any] | None = None


@dataclass
class TunedThreshold:
    """A decision threshold chosen on validation and applied, unchanged, to test. Classification
    tasks only: F1 at a fixed 0.5 threshold mostly measures where the threshold sits."""

    threshold: float
    """The threshold (on the positive-class probability) that maximises the task's metric on val."""
    val: float
    """The metric on val at ``threshold``."""
    test: float
    """The metric on test at ``threshold``: what a comparison reports beside the fixed-threshold one."""


def selection_key(task: Task, config: PostTuneConfig) -> str:
    """The validation row key the best-validation selection compares (``config.selection``)."""
    by_threshold = config.selection == "best_threshold" or (config.selection == "auto" and judged_by_confusion_matrix(task))
    return f"val/{task.metric_name}_best_threshold" if by_threshold else f"val/{task.metric_name}"


def best_val_threshold(task: Task, model: nn.Module, val: Split, *,
                       device: torch.device | str = "cpu") -> tuple[float, float] | None:
    """``(threshold, metric there)``: ``model``'s decision threshold that is best on ``val``; None
    when the task's metric is not a confusion-matrix metric (there is no threshold to choose)."""
    if not isinstance(task.metric, ConfusionMatrixMetric):
        return None
    return task.metric.best_threshold(task.predict_split(model, val, device=device).numpy(), val.labels)


def tune_threshold(task: Task, model: nn.Module, splits: Splits, *,
                   device: torch.device | str = "cpu") -> TunedThreshold | None:
    """Choose ``model``'s decision threshold on ``splits.val`` and score test at it; None when the
    task's metric is not a confusion-matrix metric. Test is never looked at while choosing."""
    best = best_val_threshold(task, model, splits.val, device=device)
    if best is None:
        return None
    threshold, val_value = best
    metric = task.metric
    assert isinstance(metric, ConfusionMatrixMetric)
    test = task.predict_split(model, splits.test, device=device).numpy()
    return TunedThreshold(threshold, val_value, metric.at_threshold(test, splits.test.labels, threshold))


@dataclass
class PostTuneResult:
    method: str
    seed: int
    steps: int
    best_step: int
    """The evaluation step of the selected model; 0 when no update beat the base on validation
    (the run "kept the base")."""
    val: dict[str, float]
    """Validation metrics of the selected (best validation) model."""
    test: dict[str, float]
    """Test metrics of the selected model: what comparisons report."""
    test_final: dict[str, float]
    """Test metrics after the last step, for reference."""
    base_val: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    surrogate_pretraining: dict[str, Any] = field(default_factory=dict)
    """How the run's surrogate was pretrained (``path``, ``reused``, ``seconds``, fidelity before
    and after) when ``surrogate.pretrain_steps`` > 0; empty otherwise."""
    surrogate_source: str = ""
    """The saved surrogate the run started from (a registered model's URI or a folder; no
    pretraining then); empty when the run learned its own."""
    mlflow: dict[str, str] = field(default_factory=dict)
    """Where the run was recorded (``experiment``, ``run_id``, ``tracking_uri``); empty if it was not."""
    tuned: TunedThreshold | None = None
    """The selected model's decision threshold chosen on val, and its metric on test there
    (classification tasks; None otherwise)."""
    model_updates: int = 0
    """Model updates this run made (rank 0's; every worker makes as many): a fair comparison gives
    every method the same number."""
    batches_digest: str = ""
    """A hash of the batches the model updates were made on, in order (rank 0's shard): equal for
    every method run with the same seed and data."""
    leave_base_share: float | None = None
    """With ``leave_base_confidence`` > 0 and a model better than the base on val: the share of
    val's halves on which it was better (below the confidence, the run kept the base). None otherwise."""
    initial_weights: str = ""
    """A hash of the model's weights before the first update (the base checkpoint's)."""
    final_weights: str = ""
    """A hash of the model's weights after the last update."""

    @property
    def kept_base(self) -> bool:
        """No update beat the base on validation: the run handed its base model back."""
        return self.best_step == 0


class PostTuneDiverged(SurrogateDivergedError):
    """A post-tuning run stopped at its first non-finite surrogate or loss value, before it reached
    the model's weights. Divergence is a result of the settings, not a fault of the machine: running
    the same settings again diverges again, so nothing retries it (a search records the trial as
    PRUNED, see :mod:`surrogate_search.search.train`). The message names the method, the step and
    the settings to change, with their values."""

    def __init__(self, config: PostTuneConfig, cause: SurrogateDivergedError, *, step: int,
                 last_evaluation: dict[str, float] | None, selected_by: str) -> None:
        self.method, self.seed, self.step, self.steps = config.method, config.seed, step, config.steps
        self.last_evaluation = dict(last_evaluation or {})
        """The last evaluation before the divergence (the base model's, step 0, if none came after it)."""
        self.changes = divergence_changes(config)
        last = ""
        if self.last_evaluation:
            last = (f" The last finite evaluation was at step {int(self.last_evaluation.get('step', 0))}: "
                    f"{selected_by} {self.last_evaluation.get(selected_by, float('nan')):.4f}.")
        at = f"step {step} of {config.steps}" if step else "the surrogate's pretraining or warm-up, before step 1"
        super().__init__(f"post-tuning with {config.method} (seed {config.seed}) diverged at {at}: {cause.what}; "
                         f"the model was not updated with it.{last} Change the config: {', or '.join(self.changes)}.",
                         what=cause.what)


def divergence_changes(config: PostTuneConfig) -> list[str]:
    """What to change, with the values now, when ``config``'s run diverges: the model's step size,
    and for a learned surrogate its step size, gradient penalty and the proxy term's weight."""
    changes = [f"lower lr (now {config.lr:g})"]
    if loss_class(config.method).learned:
        s = config.surrogate
        changes += [f"lower surrogate.lr (now {s.lr:g})", f"raise surrogate.grad_penalty (now {s.grad_penalty:g})",
                    f"raise surrogate.proxy_weight (now {s.proxy_weight:g}) to keep the proxy loss in the model's loss"]
    return changes


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _chain_digest(previous: str, batch: Split) -> str:
    """``previous`` extended by ``batch``'s tensors and labels: one hash of every batch so far, in order,
    kept as a string so that a resumed run continues it."""
    digest = hashlib.sha256(previous.encode())
    for name in sorted(batch.tensors):
        digest.update(batch.tensors[name].detach().cpu().contiguous().numpy().tobytes())
    digest.update(repr(batch.labels).encode())
    return digest.hexdigest()


def _batches(split: Split, batch_size: int, generator: torch.Generator) -> Iterator[Split]:
    while True:  # epochs without end; every batch full, so set-level losses see sets of one size
        yield from split.batches(batch_size, shuffle=True, generator=generator, drop_last=len(split) >= batch_size)


def model_step(task: Task, model: nn.Module, loss_fn: PostTuneLoss, optimizer: torch.optim.Optimizer, batch: Split,
               autocast: Any, *, step: int = 0,
               before_loss: Callable[[Seen], dict[str, float]] | None = None) -> dict[str, float]:
    """One model update on ``batch`` with ``loss_fn`` (a surrogate, AnyLoss or the proxy); a
    non-finite loss stops here, before it reaches the weights. ``before_loss`` is called with the
    forward pass (detached) before the loss is taken: the surrogate's updates on the batch's own
    predictions (``sampling.source='batch'``)."""
    with autocast:
        outputs = task.forward(model, batch)
    stats = before_loss(Seen(batch, outputs.detach())) if before_loss is not None else {}
    loss, loss_stats = loss_fn.model_loss(outputs.float(), batch)
    stats.update(loss_stats)
    # A fixed loss diverges through the model's weights (too large a step); a learned one may be its surrogate's fault.
    hint = f"Lower lr (the model's step size, now {optimizer.param_groups[0]['lr']:g})"
    check_finite(loss, f"the {loss_fn.name} loss",
                 hint=f"{hint}, or surrogate.lr, or raise surrogate.grad_penalty." if loss_fn.learned else f"{hint}.",
                 step=step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    return {**stats, "loss": float(loss.detach())}


SurrogateUpdates = Callable[..., dict[str, float]]
"""``updates(seen=None, times=None)``: ``times`` surrogate updates (default ``surrogate.steps_per_model_step``)
on pairs from the sampler, or from ``seen`` (a model update's forward pass) where the source is ``batch``."""


def surrogate_updates(loss_fn: PostTuneLoss, sampler: PairSampler, optimizer: torch.optim.Optimizer, model: nn.Module,
                      config: PostTuneConfig, world_size: int = 1) -> SurrogateUpdates:
    """The surrogate's updates as the loop makes them (``model`` unwrapped from DDP)."""

    def updates(seen: Seen | None = None, times: int | None = None) -> dict[str, float]:
        last: dict[str, float] = {}
        for _ in range(config.surrogate.steps_per_model_step if times is None else times):
            last = surrogate_step(loss_fn, sampler, optimizer, model, config.surrogate.batch_size, world_size, seen)
        return last

    return updates


def posttune_step(task: Task, model: nn.Module, loss_fn: PostTuneLoss, optimizer: torch.optim.Optimizer, batch: Split,
                  autocast: Any, *, updates: SurrogateUpdates | None = None, on_batch: bool = False,
                  step: int = 0) -> dict[str, float]:
    """One step of post-tuning: a learned loss's ``updates`` (none for a fixed loss), then one
    model update. With ``on_batch`` (``sampling.source='batch'``) the updates come between the
    model update's forward pass and its loss, on pairs from that forward pass."""
    if updates is None:
        return model_step(task, model, loss_fn, optimizer, batch, autocast, step=step)
    if on_batch:
        return model_step(task, model, loss_fn, optimizer, batch, autocast, step=step, before_loss=updates)
    return {**updates(), **model_step(task, model, loss_fn, optimizer, batch, autocast, step=step)}


def posttune(config: PostTuneConfig, checkpoint: BaseCheckpoint | str, *, splits: Splits | None = None,
             cache_dir: str | None = None, context: WorkerContext | None = None,
             surrogate: SavedSurrogate | None = None) -> PostTuneResult:
    """Post-tune the checkpoint's model with ``config.method`` and return validation/test metrics.
    ``surrogate``: a saved surrogate to start from instead of one learned here (it must fit the
    task, the method and ``config``'s network settings); warm-up and ``k`` updates still apply."""
    config.validate()
    ctx = context or WorkerContext()
    ckpt = checkpoint if isinstance(checkpoint, BaseCheckpoint) else load_checkpoint(checkpoint)
    task = ckpt.build_task()
    device = resolve_device(ctx.device or config.device)
    started = time.perf_counter()
    splits = splits or task.splits(cache_dir)
    if not isinstance(checkpoint, BaseCheckpoint):  # loaded here: is its data still the task's?
        ckpt.check_fingerprint(task, splits)
    shard = splits[config.data].shard(ctx.rank, ctx.world_size)

    seed_everything(config.seed)  # same seed on every rank: identical surrogate initialisation
    model = ckpt.build_model(task).to(device)
    loss_fn = create_loss(task, config).to(device)
    if surrogate is not None:
        surrogate.load_into(loss_fn)
    loss_fn.prepare(splits.train)
    model = ctx.prepare_model(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
                if config.lr_schedule == "cosine" else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0))
    surrogate_opt = torch.optim.Adam(loss_fn.parameters(), lr=config.surrogate.lr) if loss_fn.learned else None

    batch_gen = torch.Generator().manual_seed(config.seed * 7919 + ctx.rank)
    pair_gen = torch.Generator().manual_seed(config.seed * 104729 + ctx.rank)
    batches = _batches(shard, config.batch_size, batch_gen)
    sampler = create_sampler(task, shard, config.sampling, config.batch_size, pair_gen, device) if loss_fn.learned else None
    probe = FidelityProbe(task, splits.val, config.sampling, config.batch_size, device=device) if loss_fn.learned else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp and device.type == "cuda")
    higher = task.metric.higher_is_better
    selected_by = selection_key(task, config)

    state: dict[str, Any] = {"step": 0, "best_value": None, "best_step": 0, "best_model": None, "history": [],
                             "base_val": None, "warm": False, "batches_digest": "",
                             "initial_weights": weights_digest(_unwrap(model).state_dict())}

    def full_state() -> dict[str, Any]:
        return {
            **state,
            "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "loss_fn": loss_fn.state_dict(),
            "surrogate_opt": surrogate_opt.state_dict() if surrogate_opt else None,
            "batch_gen": batch_gen.get_state(), "pair_gen": pair_gen.get_state(),
        }

    if ctx.resume_state is not None:
        saved = ctx.resume_state
        _unwrap(model).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if saved.get("schedule") is not None:  # absent from states saved before lr_schedule existed
            schedule.load_state_dict(saved["schedule"])
        loss_fn.load_state_dict(saved["loss_fn"])
        if surrogate_opt and saved["surrogate_opt"]:
            surrogate_opt.load_state_dict(saved["surrogate_opt"])
        batch_gen.set_state(saved["batch_gen"])
        pair_gen.set_state(saved["pair_gen"])
        state.update({k: saved[k] for k in state if k in saved})  # states saved before a field existed lack it
        log.info("resumed %s at step %d", config.method, state["step"])

    updates = (surrogate_updates(loss_fn, sampler, surrogate_opt, _unwrap(model), config, ctx.world_size)
               if sampler is not None and surrogate_opt is not None else None)

    def evaluate(step: int, extra: dict[str, float]) -> dict[str, float]:
        val = task.evaluate(_unwrap(model), splits.val, device=device)
        row = {"step": float(step), **{f"val/{k}": v for k, v in val.items()}, **extra}
        best = best_val_threshold(task, _unwrap(model), splits.val, device=device)
        if best is not None:
            row[f"val/{task.metric_name}_best_threshold"] = best[1]
        if probe is not None:
            row.update(probe(loss_fn, _unwrap(model)))
        row["seconds"] = time.perf_counter() - started
        return row

    if state["base_val"] is None:
        base = evaluate(0, {})
        state["base_val"] = {k[4:]: v for k, v in base.items() if k.startswith("val/")}
        state["history"].append(base)
        # The base itself is the first candidate of the best-validation selection: a run never
        # hands back a model worse on validation than the one it started from ("kept the base").
        state.update(best_value=base[selected_by], best_step=0,
                     best_model={k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()})
        log.info("%s seed %d: base val %s %.4f", config.method, config.seed, selected_by[4:], base[selected_by])

    stats: dict[str, float] = {}
    pretraining: dict[str, Any] = {}
    # A non-finite value stops the run at once (PostTuneDiverged), never reaching the weights; every
    # worker stops at the same check.
    progress: Progress | None = None
    try:
        if surrogate is not None and not state["warm"]:
            log.info("%s: starting from the surrogate in %s (no pretraining)", config.method, surrogate.source)
        elif loss_fn.learned and not state["warm"] and config.surrogate.pretrain_steps:
            # From the base model, on the whole tuning data: the same surrogate on every worker and seed.
            pretraining = pretrained_surrogate(loss_fn, task, ckpt, _unwrap(model), splits, config, device=device,
                                               cache_dir=cache_dir)
        with synced_finite_checks(ctx.world_size):  # from here on, every worker runs the same checks in step
            if updates is not None and not state["warm"]:
                stats = updates(times=config.surrogate.warmup_steps)
                if stats:
                    log.info("surrogate warm-up: %d updates, fit %.4f, mae %.4f", config.surrogate.warmup_steps,
                             stats["surrogate/fit"], stats["surrogate/mae"])
            state["warm"] = True

            model.train()
            progress = Progress(f"{config.method} seed {config.seed}", config.steps, unit="step", initial=state["step"],
                                rank=ctx.rank)
            while state["step"] < config.steps:
                step = state["step"] + 1
                batch = next(batches)
                state["batches_digest"] = _chain_digest(state["batches_digest"], batch)
                batch = batch.to(device)
                stats.update(posttune_step(task, model, loss_fn, optimizer, batch, autocast, updates=updates,
                                           on_batch=config.sampling.source == "batch", step=step))
                schedule.step()
                state["step"] = step
                progress.reach(step)

                if step % config.eval_every == 0 or step == config.steps:
                    row = evaluate(step, stats)
                    value = row[selected_by]
                    if is_better(value, state["best_value"], higher):
                        state.update(best_value=value, best_step=step,
                                     best_model={k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()})
                    state["history"].append(row)
                    progress.reach(step, val=f"{selected_by[4:]} {value:.4f}", best=f"{state['best_value']:.4f}")
                    log.info("%s seed %d step %d/%d  val %s %.4f  (best %.4f at %d)  loss %.4f  %.0fs", config.method, config.seed,
                             step, config.steps, selected_by[4:], value, state["best_value"], state["best_step"],
                             stats["loss"], row["seconds"])
                    if ctx.report is not None:
                        ctx.report({k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}, full_state)
    except SurrogateDivergedError as exc:
        if progress is not None:
            progress.close()
        raise PostTuneDiverged(config, exc, step=state["step"] + 1 if state["warm"] else 0,
                               last_evaluation=state["history"][-1], selected_by=selected_by) from exc
    assert progress is not None
    progress.close()
    final_model = _unwrap(model)
    test_final = task.evaluate(final_model, splits.test, device=device)
    selected = copy.deepcopy(final_model)
    selected.load_state_dict(state["best_model"])
    best_step, share = state["best_step"], None
    if best_step and config.leave_base_confidence > 0:
        base_model = ckpt.build_model(task).to(device)
        share = win_share(task, base_model, selected, splits.val, seed=config.seed, device=device,
                          at_best_threshold=selected_by.endswith("_best_threshold"))
        unsure = share < config.leave_base_confidence
        log.info("%s seed %d: the model of step %d beats the base on %.0f%% of val's halves, %s "
                 "leave_base_confidence %.0f%%: %s", config.method, config.seed, best_step, 100 * share,
                 "under" if unsure else "at or above", 100 * config.leave_base_confidence,
                 "kept the base" if unsure else "selected")
        if unsure:
            selected, best_step = base_model, 0
    val = task.evaluate(selected, splits.val, device=device)
    test = task.evaluate(selected, splits.test, device=device)
    tuned = tune_threshold(task, selected, splits, device=device)
    return PostTuneResult(method=config.method, seed=config.seed, steps=config.steps, best_step=best_step,
                          val=val, test=test, test_final=test_final, base_val=state["base_val"],
                          history=state["history"], seconds=time.perf_counter() - started, tuned=tuned,
                          surrogate_pretraining=pretraining, surrogate_source=surrogate.source if surrogate else "",
                          model_updates=state["step"], batches_digest=state["batches_digest"], leave_base_share=share,
                          initial_weights=state["initial_weights"], final_weights=weights_digest(final_model.state_dict()))
