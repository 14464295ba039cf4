"""Cost of one post-tuning step relative to one proxy step on the same batch.

A proxy step is one model update with the task's proxy loss (CTC, BCE). A learned-surrogate step
is what post-tuning does per model update: ``k`` surrogate updates on fresh pairs, then one model
update through the surrogate (plus the proxy term when ``proxy_weight > 0``). Each learned method
is timed once per ``sampling.source`` in ``--sources``: ``fresh`` (local pairs from a separate
forward pass of the model) and ``batch`` (from the model update's own forward pass). Both use the
loop's own ``posttune_step`` on the same batch, in one process, after a few
untimed warm-up steps; the methods take turns, one step each per round, and the figures are medians over
``--repeats`` rounds.

    python bench/posttune_step.py --task synthetic_text --checkpoint runs/base_text
    python bench/posttune_step.py --task imbalanced_tabular --option dataset=synthetic
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from surrogate_search.compare import comparison_methods
from surrogate_search.config import PostTuneConfig
from surrogate_search.posttune import posttune_step, surrogate_updates
from surrogate_search.pretrain import ensure_base_checkpoint
from surrogate_search.sampling import create_sampler
from surrogate_search.surrogates import create_loss, loss_class
from surrogate_search.tasks import get_task
from surrogate_search.utils import parse_assignments


def time_steps(steps: dict[str, object], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per step of each function, taken in turns (one step of each per round), so
    that a machine that slows down or speeds up during the bench affects every method alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="synthetic_text")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = what one Ray Train CPU worker gets)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="post-tuning setting")
    parser.add_argument("--sources", default="fresh,batch", help="sampling.source values to time learned methods with")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    task = get_task(args.task, **parse_assignments(args.option))
    base = PostTuneConfig.for_task(task, parse_assignments(args.set))
    checkpoint = ensure_base_checkpoint(task, args.checkpoint)
    splits = task.splits()
    data = splits[base.data]  # what post-tuning updates on: the tuning part by default
    batch = next(data.batches(base.batch_size, shuffle=False))

    print(f"task {task.name} {task.options or ''}  batch {len(batch)} from {base.data} ({len(data)} samples)  "
          f"torch threads {args.threads}  "
          f"median of {args.repeats} steps")
    print(f"{'method':22s} {'source':>6s} {'ms/step':>9s} {'vs proxy':>9s}")
    steps = {}
    for method in comparison_methods(task):
        for source in args.sources.split(",") if loss_class(method).learned else ["-"]:
            config = base.replace(method=method) if source == "-" else base.replace(
                {"method": method, "sampling.source": source})
            steps[method, source] = step_function(task, checkpoint, splits, data, batch, config)
    seconds = time_steps(steps, args.repeats)
    proxy_ms = seconds["proxy", "-"] * 1000
    for (method, source), s in seconds.items():
        print(f"{method:22s} {source:>6s} {s * 1000:9.1f} {s * 1000 / proxy_ms:8.2f}x")


def step_function(task, checkpoint, splits, data, batch, config):
    """One post-tuning step as the loop takes it (``posttune_step``), on ``batch`` every time."""
    torch.manual_seed(0)
    model = checkpoint.build_model(task)
    loss_fn = create_loss(task, config)
    loss_fn.prepare(splits.train)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    model.train()
    updates = None
    if loss_fn.learned:
        sampler = create_sampler(task, data, config.sampling, config.batch_size, torch.Generator().manual_seed(0), "cpu")
        surrogate_opt = torch.optim.Adam(loss_fn.parameters(), lr=config.surrogate.lr)
        updates = surrogate_updates(loss_fn, sampler, surrogate_opt, model, config)
    return lambda: posttune_step(task, model, loss_fn, optimizer, batch, contextlib.nullcontext(), updates=updates,
                                 on_batch=config.sampling.source == "batch")


if __name__ == "__main__":
    main()
