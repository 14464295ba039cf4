"""The CRNN (CTC) against the parallel attention decoder (cross-entropy per position) on a small
rendered split: seconds per training epoch and validation edit distance after each epoch.

Both train with the task's own defaults (AdamW, lr 1e-3, batch 64, gradient clipping at 5 as in
``pretrain``) from the same seed, for a fixed number of epochs without early stopping. First, the
median time of one training step of each model on the same batch, the models taking turns step by
step so that a busy machine slows both alike.

    python bench/text_models.py
    python bench/text_models.py --train-size 5000 --epochs 10 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from surrogate_search.tasks import get_task
from surrogate_search.utils import seed_everything


def train_step(task, model, optimizer, batch) -> float:  # type: ignore[no-untyped-def]
    loss = task.proxy_loss(task.forward(model, batch), batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    return loss.item()


def step_times_ms(names: list[str], batch_size: int, repeats: int = 20, warmup: int = 3) -> dict[str, float]:
    setups = {}
    for name in names:
        task = get_task("synthetic_text", model=name, train_size=batch_size, val_size=1, test_size=1)
        model = task.build_model()
        setups[name] = (task, model, torch.optim.AdamW(model.parameters()), task.load_splits().train)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup + repeats):
        for name, (task, model, optimizer, batch) in setups.items():
            started = time.perf_counter()
            train_step(task, model, optimizer, batch)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--val-size", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--models", nargs="+", default=["crnn", "attention"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    batch_size = get_task("synthetic_text").train_defaults().batch_size
    for name, ms in step_times_ms(args.models, batch_size).items():
        print(f"{name:10s} {ms:6.1f} ms per training step (batch {batch_size}, median of 20)")
    print(f"train {args.train_size} / val {args.val_size} images, {args.epochs} epochs, torch threads {args.threads}")
    print(f"{'model':10s} {'epoch':>5s} {'s/epoch':>8s} {'train loss':>10s} {'val ED':>7s} {'val NED':>8s} {'word acc':>8s}")
    for name in args.models:
        task = get_task("synthetic_text", model=name, train_size=args.train_size, val_size=args.val_size, test_size=1)
        splits = task.load_splits()
        defaults = task.train_defaults()
        generator = seed_everything(0)
        model = task.build_model()
        optimizer = torch.optim.AdamW(model.parameters(), lr=defaults.lr, weight_decay=defaults.weight_decay)
        for epoch in range(1, args.epochs + 1):
            started = time.perf_counter()
            model.train()
            loss_sum, seen = 0.0, 0
            for batch in splits.train.batches(defaults.batch_size, shuffle=True, generator=generator, drop_last=True):
                loss_sum, seen = loss_sum + train_step(task, model, optimizer, batch) * len(batch), seen + len(batch)
            seconds = time.perf_counter() - started
            val = task.evaluate(model, splits.val)
            print(f"{name:10s} {epoch:5d} {seconds:8.1f} {loss_sum / seen:10.3f} {val['edit_distance']:7.0f} "
                  f"{val['normalized_edit_distance']:8.3f} {val['word_accuracy']:8.3f}")
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:10s} {params:,} parameters")


if __name__ == "__main__":
    main()
