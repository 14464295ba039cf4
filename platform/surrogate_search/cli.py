"""The ``surrogate-search`` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from surrogate_search.cache import default_cache_dir

Command = Callable[[argparse.Namespace], int]


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["train_size=2000", "dataset=digits"]`` -> ``{"train_size": 2000, "dataset": "digits"}`` (YAML-typed)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --option expects KEY=VALUE, got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options


def cmd_tasks(args: argparse.Namespace) -> int:
    from surrogate_search.tasks import TASKS

    for name in TASKS.names():
        cls = TASKS.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name:20s} metric={cls.metric_name:16s} {doc}")  # type: ignore[attr-defined]
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from surrogate_search.metrics import METRICS

    for name in METRICS.names():
        cls = METRICS.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        direction = "higher is better" if cls.higher_is_better else "lower is better"  # type: ignore[attr-defined]
        print(f"{name:26s} {direction:17s} {doc}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from surrogate_search.pretrain import pretrain
    from surrogate_search.tasks import get_task

    task = get_task(args.task, seed=args.data_seed, **parse_options(args.option))
    result = pretrain(task, args.out, cache_dir=args.cache_dir, device=args.device, max_epochs=args.max_epochs,
                      patience=args.patience, seed=args.seed)
    print(f"checkpoint: {result.checkpoint}  ({result.epochs} epochs, best {result.best_epoch}, {result.seconds:.0f}s)")
    for split, metrics in (("val", result.val), ("test", result.test)):
        print(f"{split:5s} " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="surrogate-search",
        description="Learn differentiable surrogates of non-differentiable metrics and post-tune models with them.")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only results, not progress")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("tasks", help="list registered tasks").set_defaults(func=cmd_tasks)
    sub.add_parser("metrics", help="list registered metrics").set_defaults(func=cmd_metrics)

    p = sub.add_parser("pretrain", help="train a base model with the task's proxy loss until validation plateaus")
    p.add_argument("--task", required=True, help="registered task name (see `surrogate-search tasks`)")
    p.add_argument("--out", required=True, help="output folder for model.pt and metrics.json")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="task option, e.g. dataset=digits")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the task's data splits")
    p.add_argument("--seed", type=int, default=0, help="seed of the model's initialisation and data order")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--patience", type=int, default=None, help="epochs without validation improvement before stopping")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--cache-dir", default=str(default_cache_dir()), help="where rendered data splits are cached")
    p.set_defaults(func=cmd_pretrain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stdout)
    from surrogate_search.checkpoint import CheckpointError
    from surrogate_search.registry import UnknownNameError

    try:
        return args.func(args)
    except (UnknownNameError, CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
