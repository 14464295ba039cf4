"""How a learned surrogate is trained: one update on fresh pairs, and the pretraining made once per
base model and cached, so that seeds and trials fine-tune one surrogate instead of each learning
its own from scratch (the cost and the weakness of a surrogate re-learned in every run).

A pretrained surrogate is keyed by what determines it: the base model's weights, the task, the
method and its own section, the ``surrogate`` settings that shape its training (not those that
only steer model updates, such as ``proxy_weight``), the ``sampling`` section and the data it
draws from. It is stored as a state dict (read back with ``weights_only=True``) beside a JSON file
of how it was made; a file lock lets concurrent trials on one node wait for the first one's result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from filelock import FileLock
from torch import nn

from surrogate_search.cache import default_cache_dir
from surrogate_search.checkpoint import BaseCheckpoint
from surrogate_search.fidelity import FidelityProbe
from surrogate_search.progress import Progress
from surrogate_search.sampling import PairSampler, Seen, create_sampler
from surrogate_search.surrogates import create_loss
from surrogate_search.surrogates.base import PostTuneLoss
from surrogate_search.tasks import Split, Splits, Task
from surrogate_search.utils import update_digest

if TYPE_CHECKING:
    from surrogate_search.config import PostTuneConfig

log = logging.getLogger(__name__)

PRETRAIN_SEED = 20_240_607
"""Seeds the pretrained surrogate's initialisation and pairs: the same surrogate whichever run
makes it first."""
MODEL_UPDATE_KEYS = ("warmup_steps", "steps_per_model_step", "proxy_weight", "filter_threshold")
"""``surrogate`` settings that only act after pretraining: runs that differ in them share one."""
MODEL_UPDATE_SAMPLING_KEYS = ("source",)
"""``sampling`` settings that only act after pretraining (pretraining always draws fresh pairs)."""


def average_gradients(module: nn.Module, world_size: int) -> None:
    # The surrogate is not wrapped in DDP (its double-backward gradient penalty and its updates on
    # locally drawn pairs do not fit DDP's hooks); averaging its gradients keeps replicas equal.
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        for p in module.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= world_size


def surrogate_step(loss_fn: PostTuneLoss, sampler: PairSampler, optimizer: torch.optim.Optimizer, model: nn.Module,
                   n_items: int, world_size: int = 1, seen: Seen | None = None) -> dict[str, float]:
    """One surrogate update on ``n_items`` fresh pairs (gradients averaged over Ray Train workers);
    ``seen``: the model update's forward pass, for ``sampling.source='batch'``."""
    pairs = sampler.sample(n_items, model, seen)
    fit_loss, stats = loss_fn.fit(pairs)
    optimizer.zero_grad(set_to_none=True)
    fit_loss.backward()
    average_gradients(loss_fn, world_size)
    torch.nn.utils.clip_grad_norm_(loss_fn.parameters(), 10.0)
    optimizer.step()
    return stats


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """A hash of a model's weights: two checkpoints with equal weights share pretrained surrogates."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        update_digest(digest, name, state_dict[name])
    return digest.hexdigest()


def pretraining_key(task: Task, checkpoint: BaseCheckpoint, config: PostTuneConfig, data: Split) -> dict[str, Any]:
    """Everything a pretrained surrogate depends on (hashed into its file name); ``data``: the split
    its pairs come from, which a caller may pass in place of the task's own."""
    options = config.options.get(config.method)
    return {
        "weights": weights_digest(checkpoint.state_dict),
        "task": task.config,
        "method": config.method,
        "method_options": dataclasses.asdict(options) if dataclasses.is_dataclass(options) else None,
        "surrogate": {k: v for k, v in dataclasses.asdict(config.surrogate).items() if k not in MODEL_UPDATE_KEYS},
        "sampling": {k: v for k, v in dataclasses.asdict(config.sampling).items() if k not in MODEL_UPDATE_SAMPLING_KEYS},
        "data": config.data,
        "data_digest": data.digest(),
        "set_size": config.batch_size,
        "inputs": list(task.surrogate_feature_shape),  # what the network reads (Task.surrogate_features)
        "version": 1,
    }


def pretrained_surrogate(loss_fn: PostTuneLoss, task: Task, checkpoint: BaseCheckpoint, model: nn.Module,
                         splits: Splits, config: PostTuneConfig, *, device: torch.device | str = "cpu",
                         cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Load ``loss_fn``'s surrogate from the cache, pretraining and caching it first if it is not
    there. ``model`` is the base model; ``splits`` holds the ``config.data`` split (pairs are drawn
    from all of it, on every Ray Train worker alike) and ``val`` (the fidelity probe). Returns how
    it was made (``path``, ``reused``, ``seconds``, final fit and fidelity figures)."""
    key = pretraining_key(task, checkpoint, config, splits[config.data])
    name = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = Path(cache_dir or default_cache_dir()) / "surrogates"
    folder.mkdir(parents=True, exist_ok=True)
    file, about = folder / f"{task.name}-{config.method}-{name}.pt", folder / f"{task.name}-{config.method}-{name}.json"
    with FileLock(str(file) + ".lock"):
        if file.exists():
            loss_fn.load_state_dict(torch.load(file, map_location=device, weights_only=True))
            info = json.loads(about.read_text()) if about.exists() else {}
            log.info("%s: reusing the surrogate pretrained in %s", config.method, file)
            return {**info, "path": str(file), "reused": True}
        with torch.random.fork_rng(devices=[]):  # a run goes on alike whether it pretrained or loaded
            torch.manual_seed(PRETRAIN_SEED)  # the same surrogate whichever run comes first
            info = _pretrain(loss_fn, task, model, splits, config, device)
        tmp = file.with_suffix(f".{os.getpid()}.tmp")
        torch.save(loss_fn.state_dict(), tmp)
        tmp.replace(file)
        about.write_text(json.dumps({**info, "key": key}, indent=2, default=str) + "\n")
    return {**info, "path": str(file), "reused": False}


def _pretrain(loss_fn: PostTuneLoss, task: Task, model: nn.Module, splits: Splits, config: PostTuneConfig,
              device: torch.device | str) -> dict[str, Any]:
    steps = config.surrogate.pretrain_steps
    started = time.perf_counter()
    loss_fn.load_state_dict(create_loss(task, config).state_dict())  # a fresh, seeded initialisation
    generator = torch.Generator().manual_seed(PRETRAIN_SEED)
    sampler = create_sampler(task, splits[config.data], config.sampling, config.batch_size, generator, device)
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=config.surrogate.lr)
    probe = FidelityProbe(task, splits["val"], config.sampling, config.batch_size, device=device)
    before = probe(loss_fn, model)
    stats: dict[str, float] = {}
    every = max(1, steps // 10)
    # Shown by whichever process pretrains: the file lock lets one at a time, the others reuse its result.
    progress = Progress(f"pretrain the {config.method} surrogate", steps, unit="update")
    for step in range(1, steps + 1):
        stats = surrogate_step(loss_fn, sampler, optimizer, model, config.surrogate.batch_size)
        progress.reach(step, fit=f"{stats['surrogate/fit']:.4f}")
        if step % every == 0 or step == steps:
            log.info("pretraining the %s surrogate on the base model: %d/%d updates, fit %.4f, mae %.4f, %.0fs",
                     config.method, step, steps, stats["surrogate/fit"], stats["surrogate/mae"],
                     time.perf_counter() - started)
    progress.close()
    after = probe(loss_fn, model)
    log.info("pretrained surrogate: Spearman on held-out local pairs with errors %.3f -> %.3f",
             before["fidelity/local_noisy_errors_spearman"], after["fidelity/local_noisy_errors_spearman"])
    return {"steps": steps, "seconds": time.perf_counter() - started, **stats,
            **{f"before/{k}": v for k, v in before.items()}, **{f"after/{k}": v for k, v in after.items()}}
