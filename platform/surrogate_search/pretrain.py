"""Train a task's base model with its proxy loss until the validation metric stops improving."""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from surrogate_search.checkpoint import (BaseCheckpoint, CheckpointError, StaleCheckpointError, checkpoint_file,
                                        load_checkpoint, save_checkpoint)
from surrogate_search.progress import Progress
from surrogate_search.tasks import Task
from surrogate_search.utils import is_better, resolve_device, seed_everything

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    checkpoint: str
    epochs: int
    best_epoch: int
    seconds: float
    val: dict[str, float]
    test: dict[str, float]
    fresh_data: bool = False
    """Whether every epoch after the first trained on new samples."""
    samples_seen: int = 0
    """Training samples in all epochs together (repeats counted)."""


def pretrain(task: Task, out_dir: str | Path, *, cache_dir: str | Path | None = None, device: str | None = None,
             max_epochs: int | None = None, patience: int | None = None, batch_size: int | None = None,
             lr: float | None = None, seed: int = 0, model_options: dict[str, Any] | None = None,
             fresh_data: bool = False) -> PretrainResult:
    """Early-stopped proxy-loss training; saves ``out_dir/model.pt`` and ``out_dir/metrics.json``.

    The best epoch is the one with the best validation metric (ties go to the lower validation
    proxy loss). The learning rate halves when validation stalls for half the patience, and
    training stops after ``patience`` epochs without improvement: the model has reached a plateau.
    ``fresh_data``: every epoch after the first trains on new samples (``Task.fresh_train_split``),
    so the model sees each once and its plateau is not one of memorisation; ``metrics.json`` says so.
    """
    if fresh_data and type(task).fresh_train_split is Task.fresh_train_split:
        raise ValueError(f"task {task.name!r} has a fixed dataset and cannot make fresh training data (fresh_data)")
    defaults = task.train_defaults()
    max_epochs = max_epochs or defaults.max_epochs
    patience = patience or defaults.patience
    batch_size = batch_size or defaults.batch_size
    lr = lr or defaults.lr
    dev = resolve_device(device)
    generator = seed_everything(seed)
    started = time.perf_counter()

    splits = task.splits(cache_dir)  # its train split excludes the tuning part
    log.info("%s: %d train / %d val / %d test samples", task.name, len(splits.train), len(splits.val), len(splits.test))
    model_options = {**task.default_model_options(), **(model_options or {})}
    model = task.build_model(**model_options).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=defaults.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=task.metric.mode, factor=0.5, patience=max(1, patience // 2))
    higher = task.metric.higher_is_better
    best: tuple[float, float] | None = None
    best_state, best_epoch, kept_epoch, epoch = copy.deepcopy(model.state_dict()), 0, 0, 0
    samples_seen = 0

    # The bar runs to max_epochs: an upper bound, since training stops earlier at a plateau.
    progress = Progress(f"pretrain {task.name}", max_epochs, unit="epoch", upper_bound=True)
    for epoch in range(1, max_epochs + 1):
        train = task.fresh_train_split(epoch) if fresh_data and epoch > 1 else splits.train
        model.train()
        loss_sum, seen = 0.0, 0
        for batch in train.batches(batch_size, shuffle=True, generator=generator, drop_last=len(train) > batch_size):
            batch = batch.to(dev)
            loss = task.proxy_loss(task.forward(model, batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            loss_sum += loss.item() * len(batch)
            seen += len(batch)
            samples_seen += len(batch)
            progress.update(len(batch) / len(train))
        val = task.evaluate(model, splits.val, device=dev)
        value = val[task.metric_name]
        scheduler.step(value)
        # Patience counts from the last strict improvement of the metric; an epoch that ties the
        # best metric with a lower proxy loss becomes the kept model without resetting patience.
        if best is None or is_better(value, best[0], higher, defaults.min_delta):
            best, best_state, best_epoch = (value, val["proxy_loss"]), copy.deepcopy(model.state_dict()), epoch
            kept_epoch = epoch
        elif value == best[0] and val["proxy_loss"] < best[1]:
            best, best_state, kept_epoch = (value, val["proxy_loss"]), copy.deepcopy(model.state_dict()), epoch
        log.info("epoch %3d  train %s %.4f  val %s %.4f  val %s %.4f  best %.4f (epoch %d)  lr %.1e  %.0fs",
                 epoch, "proxy_loss", loss_sum / max(seen, 1), "proxy_loss", val["proxy_loss"], task.metric_name,
                 value, best[0], kept_epoch, optimizer.param_groups[0]["lr"], time.perf_counter() - started)
        progress.reach(epoch, val=f"{task.metric_name} {value:.4f}", best=f"{best[0]:.4f} (epoch {kept_epoch})")
        if epoch - best_epoch >= patience:
            log.info("validation %s has not improved for %d epochs: stopping at a plateau", task.metric_name, patience)
            break
    else:
        log.warning("stopped at max_epochs=%d, %d epoch(s) after validation last improved (patience %d): the base "
                    "model may not have reached its plateau", max_epochs, epoch - best_epoch, patience)
    progress.close()

    model.load_state_dict(best_state)
    val = task.evaluate(model, splits.val, device=dev)
    test = task.evaluate(model, splits.test, device=dev)
    seconds = time.perf_counter() - started
    out = Path(out_dir)
    file = save_checkpoint(out, task, model.cpu(), model_options, metrics={"val": val, "test": test}, splits=splits)
    result = PretrainResult(str(file), epoch, kept_epoch, seconds, val, test, fresh_data, samples_seen)
    (out / "metrics.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def default_checkpoint_dir(task: Task) -> Path:
    """Where a task's base model lives unless told otherwise: ``runs/base_<task>`` followed by the
    values of the task's ``checkpoint_options`` (``runs/base_imbalanced_tabular_digits``,
    ``runs/base_synthetic_text_attention``)."""
    suffix = "".join(f"_{task.options[k]}" for k in task.checkpoint_options if k in task.options)
    return Path("runs") / f"base_{task.name}{suffix}"


def ensure_base_checkpoint(task: Task, path: str | Path | None = None, *, cache_dir: str | None = None,
                           pretrain_if_missing: bool = True, replace_stale: bool = False,
                           pretrain_options: Mapping[str, Any] | None = None) -> BaseCheckpoint:
    """Load the base checkpoint at ``path`` (default :func:`default_checkpoint_dir`), pretraining it
    first if it does not exist yet. A checkpoint of another task is an error, never silently replaced;
    one pretrained for an older version of the task, on data that no longer matches its fingerprint
    (``StaleCheckpointError``), or with other task options or data seed, is pretrained again only
    with ``replace_stale`` (for folders the caller owns, such as ``make run``'s)."""
    path = Path(path) if path else default_checkpoint_dir(task)
    try:
        checkpoint = load_checkpoint(path, expected_task=task.name)
        # Its own options rebuild its task: is that task's data still what the model was trained on?
        own = checkpoint.build_task()
        checkpoint.check_fingerprint(own, own.splits(cache_dir))
        differs = _option_changes(checkpoint, task)
        if not differs:
            return checkpoint
        if not replace_stale:  # the checkpoint's own options rebuild its task, so this is usable
            log.warning("using %s, pretrained with other task options than asked for (%s)", path, differs)
            return checkpoint
        log.warning("%s was pretrained with other task options (%s); pretraining it again", path, differs)
    except StaleCheckpointError as exc:
        if not replace_stale:
            raise
        log.warning("%s; pretraining it again", exc)  # the folder is the caller's to replace
    except CheckpointError:
        # A path that names a file (``base/model.pt``) is read, never pretrained into: pretraining
        # writes a folder.
        if not pretrain_if_missing or (path / "model.pt").exists() or checkpoint_file(path) == path:
            raise
    log.info("pretraining a base model at %s with the %s proxy loss", path, task.name)
    pretrain(task, path, cache_dir=cache_dir, **(pretrain_options or {}))
    return load_checkpoint(path, expected_task=task.name)


def _option_changes(checkpoint: BaseCheckpoint, task: Task) -> str:
    """How the task a checkpoint was pretrained for differs from ``task`` ('' if it does not)."""
    changes = [f"{key}: {checkpoint.task_options.get(key)!r} -> {task.options.get(key)!r}"
               for key in sorted(set(checkpoint.task_options) | set(task.options))
               if checkpoint.task_options.get(key) != task.options.get(key)]
    if checkpoint.task_seed != task.seed:
        changes.append(f"data seed: {checkpoint.task_seed} -> {task.seed}")
    return ", ".join(changes)
