"""The ``surrogate-search`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from surrogate_search.cache import default_cache_dir

Command = Callable[[argparse.Namespace], int]


_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["train_size=2000", "dataset=digits"]`` -> ``{"train_size": 2000, "dataset": "digits"}`` (YAML-typed)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --option expects KEY=VALUE, got {pair!r}")
        parsed = yaml.safe_load(value)
        # YAML 1.1 reads `3e-5` (no dot) as a string; on a command line it means a number.
        options[key] = float(parsed) if isinstance(parsed, str) and _SCIENTIFIC.match(parsed) else parsed
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


def load_config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--config FILE.yaml`` (a post-tuning config, or a search's ``best_config.yaml``) then ``--set KEY=VALUE``."""
    overrides: dict[str, Any] = {}
    if getattr(args, "config", None):
        loaded = yaml.safe_load(open(args.config, encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping of post-tuning settings, got {type(loaded).__name__}")
        overrides.update(loaded.get("posttune", loaded))
    overrides.update(parse_options(getattr(args, "set", [])))
    if getattr(args, "steps", None):
        overrides["steps"] = args.steps
    return overrides


def _tracking_uri(args: argparse.Namespace) -> str | None:
    """The absolute tracking URI, checked before any training starts; None with ``--no-track``."""
    if args.no_track:
        return None
    from surrogate_search.tracking import check_tracking_store, resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    check_tracking_store(uri)
    return uri


def cmd_compare(args: argparse.Namespace) -> int:
    from surrogate_search.compare import compare, ensure_base_checkpoint, merge_config
    from surrogate_search.tasks import get_task

    overrides = load_config_overrides(args)
    task_name, options, data_seed, checkpoint_path = args.task, parse_options(args.option), args.data_seed, args.checkpoint
    if args.from_search:
        # The best trial's settings, task and base checkpoint; --task/--option/--checkpoint/--set still win.
        from surrogate_search.search.tune import load_best_config

        best = load_best_config(args.from_search)
        task_name = task_name or best["task"]["name"]
        options = {**(best["task"].get("options") or {}), **options}
        data_seed = best["task"].get("seed", data_seed) if args.data_seed is None else data_seed
        checkpoint_path = checkpoint_path or best.get("checkpoint")
        overrides = merge_config(best["posttune"], overrides)
        print(f"best configuration of search {best.get('search')} (trial {best.get('trial')}, "
              f"{best['objective']['metric']} {best['objective']['value']:.4f})")
    if not task_name:
        raise ValueError("compare needs --task, or --from-search with a search's folder or best_config.yaml")
    task = get_task(task_name, seed=data_seed or 0, **options)
    uri = _tracking_uri(args)
    checkpoint = ensure_base_checkpoint(task, checkpoint_path, cache_dir=args.cache_dir)
    methods = args.methods.split(",") if args.methods else None
    if uri is None:
        result = compare(checkpoint, overrides, methods=methods, seeds=range(args.seeds), cache_dir=args.cache_dir)
        print(result.table())
        return 0
    from surrogate_search.tracking import tracked_compare

    tracked = tracked_compare(checkpoint, overrides, methods=methods, seeds=range(args.seeds),
                              cache_dir=args.cache_dir, experiment=args.experiment, tracking_uri=uri,
                              comparison_id=args.comparison_id)
    print(tracked.comparison.table())
    print(f"MLflow: experiment {tracked.experiment!r}, comparison run {tracked.parent_run_id} "
          f"({len(tracked.child_run_ids)} child runs) in {uri}")
    print(f"table again: surrogate-search report --experiment {tracked.experiment} --run-id {tracked.parent_run_id}")
    return 0


def cmd_posttune(args: argparse.Namespace) -> int:
    from surrogate_search.compare import ensure_base_checkpoint, merge_config, task_posttune_defaults
    from surrogate_search.config import PostTuneConfig
    from surrogate_search.posttune import posttune
    from surrogate_search.tasks import get_task

    task = get_task(args.task, seed=args.data_seed, **parse_options(args.option))
    uri = _tracking_uri(args)
    checkpoint = ensure_base_checkpoint(task, args.checkpoint, cache_dir=args.cache_dir)
    config = PostTuneConfig.from_dict(merge_config(task_posttune_defaults(task), {"method": args.method, **load_config_overrides(args)}))
    run_note = ""
    if uri is None:
        result = posttune(config, checkpoint, cache_dir=args.cache_dir)
    else:
        from surrogate_search.tracking import start_run, task_experiment_name, tracked_posttune
        from surrogate_search.tracking.recorder import run_tags

        experiment = args.experiment or task_experiment_name(task)
        logger = start_run(experiment, config.flat(), {**run_tags(task, config), "checkpoint": str(checkpoint.path or "")},
                           tracking_uri=uri, run_name=f"{config.method} seed {config.seed}")
        with logger:
            result = tracked_posttune(config, checkpoint, logger, cache_dir=args.cache_dir).result
        run_note = f"\nMLflow: experiment {experiment!r}, run {logger.run_id} in {uri}"
    metric = task.metric_name
    print(f"{config.method}: base val {metric} {result.base_val[metric]:.4f} -> val {result.val[metric]:.4f} "
          f"(step {result.best_step}), test {result.test[metric]:.4f}, {result.seconds:.0f}s{run_note}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from surrogate_search.tracking import comparison_report, resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    _check_local_store(uri)
    print(comparison_report(args.experiment, run_id=args.run_id, tracking_uri=uri).render(args.format))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from surrogate_search.tracking.ui import serve_ui

    return serve_ui(args.tracking_uri, port=args.port, experiment=args.experiment)


def _check_local_store(uri: str) -> None:
    # Reading a SQLite store that is not there would create an empty one and report "no experiment".
    from pathlib import Path

    from surrogate_search.tracking import check_tracking_store

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise FileNotFoundError(f"no MLflow store at {uri}: run `surrogate-search compare` here first, or pass --tracking-uri")
    check_tracking_store(uri)


def cmd_search(args: argparse.Namespace) -> int:
    from surrogate_search.search import load_space

    # The space is validated before Ray is imported, so a typo costs no cluster time.
    spec = load_space(args.space, overrides=parse_options(args.set))
    uri = _tracking_uri(args)
    from surrogate_search.search.tune import run_search

    outcome = run_search(spec, storage=args.storage, resume=args.resume, address=args.address,
                         num_cpus=args.num_cpus, cache_dir=args.cache_dir, seed=args.seed,
                         tracking_uri=uri, experiment=args.experiment)
    return 0 if outcome.best_value is not None else 1


def _add_task_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--task", required=required, help="registered task name (see `surrogate-search tasks`)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="task option, e.g. dataset=digits")
    p.add_argument("--data-seed", type=int, default=0 if required else None, help="seed of the task's data splits")
    p.add_argument("--cache-dir", default=str(default_cache_dir()), help="where rendered data splits are cached")


def _add_posttune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None, help="base checkpoint folder (default runs/base_<task>; pretrained if missing)")
    p.add_argument("--config", default=None, help="YAML with post-tuning settings (e.g. a search's best_config.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="post-tuning setting, e.g. surrogate.width=32 or proxy_weight=0.5")
    p.add_argument("--steps", type=int, default=None, help="model updates per run (the extra budget)")


def _add_tracking_arguments(p: argparse.ArgumentParser, *, recording: bool = True) -> None:
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in this folder)")
    if recording:
        p.add_argument("--no-track", action="store_true", help="do not record runs in MLflow")
        p.add_argument("--experiment", default=None, help="MLflow experiment (default: one per task, e.g. synthetic_text)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="surrogate-search",
        description="Learn differentiable surrogates of non-differentiable metrics and post-tune models with them.")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only results, not progress")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="module or .py file that registers your own tasks/metrics (repeatable; exported to "
                             "Ray workers as SURROGATE_SEARCH_PLUGINS)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("tasks", help="list registered tasks").set_defaults(func=cmd_tasks)
    sub.add_parser("metrics", help="list registered metrics").set_defaults(func=cmd_metrics)

    p = sub.add_parser("pretrain", help="train a base model with the task's proxy loss until validation plateaus")
    _add_task_arguments(p)
    p.add_argument("--out", required=True, help="output folder for model.pt and metrics.json")
    p.add_argument("--seed", type=int, default=0, help="seed of the model's initialisation and data order")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--patience", type=int, default=None, help="epochs without validation improvement before stopping")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("posttune", help="post-tune a base model with one method (a learned surrogate or a baseline)")
    _add_task_arguments(p)
    _add_posttune_arguments(p)
    p.add_argument("--method", default="deep_embedding", help="proxy, weighted_proxy, anyloss, deep_embedding, relational")
    _add_tracking_arguments(p)
    p.set_defaults(func=cmd_posttune)

    p = sub.add_parser("compare", help="learned surrogates vs proxy continuation vs AnyLoss, same budget, several seeds")
    _add_task_arguments(p, required=False)
    _add_posttune_arguments(p)
    p.add_argument("--from-search", default=None, metavar="DIR_OR_FILE",
                   help="use a search's best configuration (its folder or best_config.yaml): task, checkpoint, settings")
    p.add_argument("--seeds", type=int, default=3, help="seeds per method")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: all that apply to the task)")
    _add_tracking_arguments(p)
    p.add_argument("--comparison-id", default=None,
                   help="name of the comparison run; the same id again resumes into the same MLflow runs")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("report", help="the comparison table read back from MLflow (mean ± std over seeds, vs proxy)")
    p.add_argument("--experiment", required=True, help="MLflow experiment, e.g. imbalanced_tabular_breast_cancer")
    p.add_argument("--run-id", default=None, help="comparison (parent) run id (default: the latest finished one)")
    p.add_argument("--format", default="text", choices=["text", "markdown", "csv", "json"])
    _add_tracking_arguments(p, recording=False)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("ui", help="start the MLflow UI for the local store on 127.0.0.1 and print its address")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--experiment", default=None, help="also print the address of this experiment's page")
    _add_tracking_arguments(p, recording=False)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("search", help="search post-tuning settings with Ray Tune + Optuna (local Ray, or a cluster)")
    p.add_argument("space", help="search space YAML, e.g. search_spaces/tabular_f1_smoke.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the space file, e.g. budget.trials=4 or posttune.steps=20")
    p.add_argument("--resume", action="store_true", help="continue the interrupted search in --storage")
    p.add_argument("--address", default=None,
                   help="Ray cluster to run on (default: RAY_ADDRESS, else Ray started in this process)")
    p.add_argument("--storage", default="runs/search", help="folder of searches; this one goes to STORAGE/<space name>")
    p.add_argument("--num-cpus", type=int, default=None, help="local mode: logical CPUs Ray may use (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler")
    p.add_argument("--cache-dir", default=str(default_cache_dir()), help="where rendered data splits are cached")
    _add_tracking_arguments(p)
    p.set_defaults(func=cmd_search)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stdout)
    from surrogate_search.checkpoint import CheckpointError
    from surrogate_search.registry import UnknownNameError
    from surrogate_search.tracking.store import TrackingUnavailableError
    from surrogate_search.search.space import SpaceError

    try:
        if args.plugin:
            from surrogate_search.plugins import add_plugins

            add_plugins(args.plugin)
        return args.func(args)
    except (UnknownNameError, CheckpointError, SpaceError, ValueError, FileNotFoundError, FileExistsError, ImportError,
            TrackingUnavailableError) as exc:
        if os.environ.get("SURROGATE_SEARCH_DEBUG"):
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
