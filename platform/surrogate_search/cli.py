"""The ``surrogate-search`` command."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from surrogate_search.cache import default_cache_dir
from surrogate_search.utils import flatten, parse_assignments

Command = Callable[[argparse.Namespace], int]


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


def cmd_methods(args: argparse.Namespace) -> int:
    from surrogate_search.surrogates import list_methods, loss_class
    from surrogate_search.tasks import TASKS, get_task

    tasks = {name: get_task(name) for name in TASKS.names()}
    for name in list_methods():
        cls = loss_class(name)
        doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())  # its first paragraph
        applies = ",".join(t for t, task in tasks.items() if cls.supports(task)) or "none of the registered tasks"
        print(f"{name:24s} {'learned' if cls.learned else 'fixed':8s} tasks={applies}\n{'':24s} {doc}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from surrogate_search.pretrain import pretrain
    from surrogate_search.tasks import get_task

    task = get_task(args.task, seed=args.data_seed, **parse_assignments(args.option))
    result = pretrain(task, args.out, cache_dir=args.cache_dir, device=args.device, max_epochs=args.max_epochs,
                      patience=args.patience, seed=args.seed, fresh_data=args.fresh_data)
    print(f"checkpoint: {result.checkpoint}  ({result.epochs} epochs, best {result.best_epoch}, {result.seconds:.0f}s, "
          f"{result.samples_seen} training samples{', each new' if result.fresh_data else ''})")
    for split, metrics in (("val", result.val), ("test", result.test)):
        print(f"{split:5s} " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0


def load_config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--config FILE.yaml`` (a post-tuning config, or a search's ``best_config.yaml``) then
    ``--set KEY=VALUE``, as dotted keys."""
    overrides: dict[str, Any] = {}
    if getattr(args, "config", None):
        loaded = yaml.safe_load(open(args.config, encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping of post-tuning settings, got {type(loaded).__name__}")
        overrides.update(flatten(loaded.get("posttune", loaded)))
    overrides.update(parse_assignments(getattr(args, "set", [])))
    if getattr(args, "steps", None) is not None:  # --steps 0 is refused by the config, not read as "not given"
        overrides["steps"] = args.steps
    if getattr(args, "device", None):
        overrides["device"] = args.device
    if getattr(args, "amp", False):
        overrides["amp"] = True
    return overrides


def _tracking_uri(args: argparse.Namespace) -> str | None:
    """The absolute tracking URI, checked before any training starts; None with ``--no-track``."""
    if args.no_track:
        return None
    from surrogate_search.tracking import check_tracking_store, resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    check_tracking_store(uri)
    return uri


def _recorded(result: Any, kind: str = "run") -> str:
    where = result.mlflow
    return f"MLflow: experiment {where['experiment']!r}, {kind} {where['run_id']} in {where['tracking_uri']}"


def cmd_compare(args: argparse.Namespace) -> int:
    from surrogate_search import api
    from surrogate_search.compare import check_seeds, comparison_methods
    from surrogate_search.config import PostTuneConfig
    from surrogate_search.pretrain import ensure_base_checkpoint
    from surrogate_search.tasks import get_task

    overrides = load_config_overrides(args)
    task_name, options, data_seed, checkpoint_path = args.task, parse_assignments(args.option), args.data_seed, args.checkpoint
    if args.from_search:
        # The best trial's settings, task and base checkpoint; --task/--option/--checkpoint/--set still win.
        from surrogate_search.search.outcome import load_best_config

        best = load_best_config(args.from_search)
        task_name = task_name or best["task"]["name"]
        options = {**(best["task"].get("options") or {}), **options}
        data_seed = best["task"].get("seed", data_seed) if args.data_seed is None else data_seed
        checkpoint_path = checkpoint_path or best.get("checkpoint")
        overrides = {**flatten(best["posttune"]), **overrides}
        print(f"best configuration of search {best.get('search')} (trial {best.get('trial')}, "
              f"{best['objective']['metric']} {best['objective']['value']:.4f})")
    if not task_name:
        raise ValueError("compare needs --task, or --from-search with a search's folder or best_config.yaml")
    task = get_task(task_name, seed=data_seed or 0, **options)
    methods = args.methods.split(",") if args.methods else None
    # Settings, method names and seeds are checked before a base model is pretrained or a run is started.
    PostTuneConfig.for_task(task, overrides)
    comparison_methods(task, methods)
    seeds = check_seeds(range(args.seeds))
    uri = _tracking_uri(args)
    if args.registered_model_name and uri is None:
        raise ValueError("--registered-model-name registers in MLflow: drop --no-track")
    checkpoint = ensure_base_checkpoint(task, checkpoint_path, cache_dir=args.cache_dir)
    result = api.compare(checkpoint, overrides, methods=methods, seeds=seeds, cache_dir=args.cache_dir,
                         track=uri is not None, tracking_uri=uri, experiment=args.experiment,
                         comparison_id=args.comparison_id, registered_model_name=args.registered_model_name)
    print(result.table())
    if result.mlflow:
        print(f"{_recorded(result, 'comparison run')} ({len(result.runs)} child runs)")
        print(f"table again: surrogate-search report --experiment {result.mlflow['experiment']} "
              f"--run-id {result.mlflow['run_id']}")
    if result.registration is not None:
        reg = result.registration
        print(reg.summary())
        start = f"models:/{reg.name}@champion" if reg.champion else reg.model_uri
        print("post-tune from it: " + shlex.join(["surrogate-search", "posttune", *_posttune_words(task, checkpoint,
                                                  checkpoint_path, args.tracking_uri), "--surrogate", start]))
    return 0


def _posttune_words(task: Any, checkpoint: Any, checkpoint_path: str | None, tracking_uri: str | None) -> list[str]:
    """The words of a ``posttune`` command on the comparison's task and base model, and the store its
    surrogate was registered in: options left at their defaults are not spelled out."""
    from surrogate_search.checkpoint import task_words

    defaults = task.validate_options({})
    options = {k: v for k, v in checkpoint.task_options.items() if k not in defaults or defaults[k] != v}
    words = task_words(checkpoint.task_name, options, checkpoint.task_seed)
    if checkpoint_path:
        words += ["--checkpoint", str(checkpoint_path)]
    return [*words, "--tracking-uri", tracking_uri] if tracking_uri else words


def cmd_posttune(args: argparse.Namespace) -> int:
    from surrogate_search import api
    from surrogate_search.config import PostTuneConfig
    from surrogate_search.pretrain import ensure_base_checkpoint
    from surrogate_search.tasks import get_task

    task = get_task(args.task, seed=args.data_seed, **parse_assignments(args.option))
    # A surrogate to start from brings its method and network settings; --method, --config, --set still win.
    saved = api.fetch_surrogate(args.surrogate, tracking_uri=args.tracking_uri) if args.surrogate else None
    defaults = saved.settings if saved else {"method": "deep_embedding"}
    config = PostTuneConfig.for_task(task, {**defaults, **({"method": args.method} if args.method else {}),
                                            **load_config_overrides(args)})
    if saved:
        saved.check(task, config)  # before a base model is pretrained or a run is started
    uri = _tracking_uri(args)
    checkpoint = ensure_base_checkpoint(task, args.checkpoint, cache_dir=args.cache_dir)
    result = api.posttune(config, checkpoint, track=uri is not None, tracking_uri=uri, experiment=args.experiment,
                          cache_dir=args.cache_dir, surrogate=saved)
    metric = task.metric_name
    if saved:
        print(f"{config.method}: started from the surrogate {saved.source}"
              + (f" ({saved.resolved})" if saved.resolved and saved.resolved != saved.source else "")
              + ", not learned here (no pretraining)")
    print(f"{config.method}: base val {metric} {result.base_val[metric]:.4f} -> val {result.val[metric]:.4f} "
          f"(step {result.best_step}), test {result.test[metric]:.4f}, {result.seconds:.0f}s")
    if result.tuned is not None:
        print(f"{config.method}: at the threshold chosen on val ({result.tuned.threshold:.3f}): "
              f"val {metric} {result.tuned.val:.4f}, test {metric} {result.tuned.test:.4f}")
    if result.mlflow:
        print(_recorded(result))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from surrogate_search.tracking import comparison_report, resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    _check_local_store(uri)
    report = comparison_report(args.experiment, run_id=args.run_id, tracking_uri=uri)
    print(report.render(args.format))
    if args.html or args.markdown:
        from surrogate_search.tracking.report_file import write_report_file

        for path, fmt in ((args.html, "html"), (args.markdown, "markdown")):
            if path:
                print(f"wrote {write_report_file(report, path, fmt, tracking_uri=uri)}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from surrogate_search.search.dashboard import DashboardServer
    from surrogate_search.search.study import shown_url

    dashboard = DashboardServer.open(args.search, port=args.port)
    print(f"Optuna dashboard: {dashboard.url}  (study storage {shown_url(dashboard.storage)})", flush=True)
    for study_id, name, trials in dashboard.studies:
        print(f"study {name} ({trials} trials): {dashboard.study_url(study_id)}", flush=True)
    print("Ctrl-C stops it.", flush=True)
    dashboard.serve_forever()
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
    from surrogate_search import api
    from surrogate_search.search import load_space

    # The space is validated before Ray is imported, so a typo costs no cluster time.
    spec = load_space(args.space, overrides=parse_assignments(args.set))
    uri = _tracking_uri(args)
    outcome = api.run_search(spec, storage=args.storage, resume=args.resume, address=args.address,
                             num_cpus=args.num_cpus, cache_dir=args.cache_dir, seed=args.seed,
                             study_storage=args.study_storage, track=uri is not None, tracking_uri=uri, experiment=args.experiment)
    print(outcome.summary())
    if outcome.mlflow:
        print(_recorded(outcome, "search run"))
    return 0 if outcome.best_value is not None else 1


def cmd_sync(args: argparse.Namespace) -> int:
    from surrogate_search.search.outcome import STUDY_DB, TRAIN_DIR, storage_location
    from surrogate_search.search.sync import TRIAL_RECORD, study_storage_of, trial_records
    from surrogate_search.search.tracking import sync_and_close
    from surrogate_search.tracking import check_tracking_store

    folder = storage_location(args.search)
    records = [record for _, record in trial_records(folder)]
    if not records:
        raise FileNotFoundError(f"{folder} holds no tracked trial (no {TRAIN_DIR}/*/{TRIAL_RECORD}): pass the folder of a "
                                "search run with tracking on (runs/search/<space name>, or s3://bucket/searches/<space name>)")
    for uri in {args.tracking_uri} if args.tracking_uri else {r.tracking_uri for r in records}:
        check_tracking_store(uri)  # a server still down: one line naming it
    if study_storage_of(folder, args.study_storage) is None:
        print(f"note: the Optuna study of {folder} was not found (no {STUDY_DB}, or its --study-storage URL holds a "
              "password): runs are closed after their trials' states only with --study-storage", file=sys.stderr)
    done, closed = sync_and_close(folder, tracking_uri=args.tracking_uri, study_storage=args.study_storage)
    for trial in done:
        changes = [*(["run made"] if trial.created else []), f"{trial.rows_sent} metric value(s) sent",
                   *([f"status {trial.status}"] if trial.status else [])]
        print(f"{trial.trial_key}: run {trial.run_id}: {', '.join(changes)}")
    if closed:
        print(f"search run {records[0].parent_run_id}: status {closed}")
    print(f"{len(done)} trial(s) in sync with MLflow")
    return 0


def _add_task_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    from surrogate_search.tasks import TASKS

    p.add_argument("--task", required=required, help=f"a registered task: {', '.join(TASKS.names())}")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="task option, e.g. dataset=digits")
    p.add_argument("--data-seed", type=int, default=0 if required else None, help="seed of the task's data splits")
    p.add_argument("--cache-dir", default=str(default_cache_dir()), help="where rendered data splits are cached")


def _add_posttune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None, help="base checkpoint folder (default runs/base_<task>; pretrained if missing)")
    p.add_argument("--config", default=None, help="YAML with post-tuning settings (e.g. a search's best_config.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="post-tuning setting, e.g. surrogate.width=32, surrogate.proxy_weight=0.5 or "
                        "anyloss.amplification=20 (a loss's own settings are in the section named after it)")
    p.add_argument("--steps", type=int, default=None, help="model updates per run (the extra budget)")
    p.add_argument("--device", default=None, help="auto (the default: CUDA when there is one), cpu, cuda, cuda:1, ... "
                                                  "(the setting `device`)")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast for the model on CUDA (the setting `amp`)")


def _add_tracking_arguments(p: argparse.ArgumentParser, *, recording: bool = True) -> None:
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in this folder)")
    if recording:
        p.add_argument("--no-track", action="store_true", help="do not record runs in MLflow")
        p.add_argument("--experiment", default=None, help="MLflow experiment (default: one per task, e.g. synthetic_text)")


EXAMPLES = {
    "": ["surrogate-search tasks",
         "surrogate-search compare --task imbalanced_tabular --option dataset=breast_cancer --seeds 3",
         "surrogate-search search search_spaces/text_edit_distance_smoke.yaml"],
    "tasks": ["surrogate-search tasks",
              "surrogate-search --plugin my_tasks.py tasks"],
    "metrics": ["surrogate-search metrics",
                "surrogate-search --plugin my_tasks.py metrics"],
    "methods": ["surrogate-search methods",
                "surrogate-search --plugin my_losses.py methods"],
    "pretrain": ["surrogate-search pretrain --task synthetic_text --out runs/base_text",
                 "surrogate-search pretrain --task imbalanced_tabular --option dataset=digits --out runs/base_tab_digits",
                 "surrogate-search pretrain --task box_localization --out runs/base_box --device cuda"],
    "posttune": ["surrogate-search posttune --task synthetic_text --surrogate "
                 "models:/synthetic_text-deep_embedding-surrogate@champion --steps 300",
                 "surrogate-search posttune --task imbalanced_tabular --method anyloss --set anyloss.amplification=20",
                 "surrogate-search posttune --task synthetic_text --method relational --device cuda --amp"],
    "compare": ["surrogate-search compare --task imbalanced_tabular --option dataset=breast_cancer --seeds 3",
                "surrogate-search compare --task synthetic_text --methods expected_edit_distance,deep_embedding "
                "--registered-model-name text-surrogate",
                "surrogate-search compare --from-search runs/search/text_edit_distance --seeds 5"],
    "report": ["surrogate-search report --experiment synthetic_text",
               "surrogate-search report --experiment synthetic_text --format markdown --html report.html",
               "surrogate-search report --experiment imbalanced_tabular_breast_cancer --run-id RUN_ID --format json"],
    "ui": ["surrogate-search ui --experiment synthetic_text",
           "surrogate-search ui --port 5001 --tracking-uri sqlite:///other/mlflow.db"],
    "search": ["surrogate-search search search_spaces/text_edit_distance_smoke.yaml",
               "surrogate-search search search_spaces/tabular_f1.yaml --set budget.trials=32",
               "surrogate-search search search_spaces/text_edit_distance.yaml --resume"],
    "sync": ["surrogate-search sync runs/search/text_edit_distance",
             "surrogate-search sync runs/search/tabular_f1 --tracking-uri http://127.0.0.1:5000"],
    "dashboard": ["surrogate-search dashboard runs/search/text_edit_distance",
                  "surrogate-search dashboard runs/search/tabular_f1_smoke --port 8081"],
}
"""Two or three examples per command, shown at the end of its ``--help``."""


def _epilog(command: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[command])


def version_line() -> str:
    """``surrogate-search 0.1.0 (python 3.11.9, torch 2.13.0, ray 2.60.0, ...)``: what a bug report needs."""
    import platform
    from importlib import metadata

    from surrogate_search import __version__

    versions = [f"python {platform.python_version()}"]
    for package in ("torch", "ray", "optuna", "mlflow", "optuna-dashboard"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    return f"surrogate-search {__version__} ({', '.join(versions)})"


def build_parser() -> argparse.ArgumentParser:
    from surrogate_search.surrogates import list_methods  # plugins are loaded before the parser is built

    parser = argparse.ArgumentParser(
        prog="surrogate-search",
        description="Learn differentiable surrogates of non-differentiable metrics and post-tune models with them. "
                    "Exit status: 0 done; 1 the work ran and failed (a loss that diverged, a search without a "
                    "finished trial); 2 refused before any work started (bad input, or a store, folder or "
                    "cluster that cannot be used as asked), with one `error: ...` line.",
        epilog=_epilog(""), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_line())
    parser.add_argument("-q", "--quiet", action="store_true", help="print only results, not progress")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="module or .py file that registers your own tasks/metrics (repeatable; exported to "
                             "Ray workers as SURROGATE_SEARCH_PLUGINS)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, epilog=_epilog(name),
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    command("tasks", "list registered tasks").set_defaults(func=cmd_tasks)
    command("metrics", "list registered metrics").set_defaults(func=cmd_metrics)
    command("methods", "list registered post-tuning methods (losses) and the tasks each applies to"
            ).set_defaults(func=cmd_methods)

    p = command("pretrain", "train a base model with the task's proxy loss until validation plateaus")
    _add_task_arguments(p)
    p.add_argument("--out", required=True, help="output folder for model.pt and metrics.json")
    p.add_argument("--seed", type=int, default=0, help="seed of the model's initialisation and data order")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--patience", type=int, default=None, help="epochs without validation improvement before stopping")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--fresh-data", action="store_true",
                   help="train every epoch after the first on new samples, so the base model cannot memorise them "
                        "(tasks that make their data: synthetic_text)")
    p.set_defaults(func=cmd_pretrain)

    p = command("posttune", "post-tune a base model with one method (a learned surrogate or a baseline)")
    _add_task_arguments(p)
    _add_posttune_arguments(p)
    p.add_argument("--method", default=None, help=f"a registered method: {', '.join(list_methods())} (default: "
                                                  "the --surrogate's method, else deep_embedding)")
    p.add_argument("--surrogate", default=None, metavar="URI_OR_DIR",
                   help="start from this learned surrogate instead of learning one (no pretraining): "
                        "models:/NAME@champion or models:/NAME/VERSION in MLflow's model registry (at --tracking-uri; "
                        "`compare` registers them), runs:/RUN_ID/surrogate (a learned run's own, its surrogate_uri tag), "
                        "or a folder with surrogate.pt and surrogate.json; its method and "
                        "network settings (surrogate.encoder, width, depth, embedding, align_targets) are the "
                        "defaults, and a task, method or setting that differs is refused")
    _add_tracking_arguments(p)
    p.set_defaults(func=cmd_posttune)

    p = command("compare", "learned surrogates vs proxy continuation vs AnyLoss, same budget, several seeds")
    _add_task_arguments(p, required=False)
    _add_posttune_arguments(p)
    p.add_argument("--from-search", default=None, metavar="DIR_OR_FILE",
                   help="use a search's best configuration (its folder or best_config.yaml): task, checkpoint, settings")
    p.add_argument("--seeds", type=int, default=3, help="seeds per method")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated methods (default: all that apply to the task, of {', '.join(list_methods())})")
    _add_tracking_arguments(p)
    p.add_argument("--comparison-id", default=None,
                   help="name of the comparison run; the same id again resumes into the same MLflow runs")
    p.add_argument("--registered-model-name", default=None, metavar="NAME",
                   help="register the best learned surrogate (by val metric) as a new version of NAME in MLflow's "
                        "model registry (default: <experiment>-<method>-surrogate); alias @champion moves to it "
                        "when it beats the champion's val metric")
    p.set_defaults(func=cmd_compare)

    p = command("report", "the comparison table read back from MLflow (mean ± std over seeds, vs proxy)")
    p.add_argument("--experiment", required=True, help="MLflow experiment, e.g. imbalanced_tabular_breast_cancer")
    p.add_argument("--run-id", default=None, help="comparison (parent) run id (default: the latest finished one)")
    p.add_argument("--format", default="text", choices=["text", "markdown", "csv", "json"])
    p.add_argument("--html", default=None, metavar="FILE",
                   help="also write the table and the comparison's plots as one self-contained HTML file")
    p.add_argument("--markdown", default=None, metavar="FILE",
                   help="also write them as one Markdown file (plots inlined as data: URIs)")
    _add_tracking_arguments(p, recording=False)
    p.set_defaults(func=cmd_report)

    p = command("ui", "start the MLflow UI for the local store on 127.0.0.1 and print its address")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--experiment", default=None, help="also print the address of this experiment's page")
    _add_tracking_arguments(p, recording=False)
    p.set_defaults(func=cmd_ui)

    p = command("search", "search post-tuning settings with Ray Tune + Optuna (local Ray, or a cluster)")
    p.add_argument("space", help="search space YAML, e.g. search_spaces/tabular_f1_smoke.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the space file, e.g. budget.trials=4 or posttune.steps=20")
    p.add_argument("--resume", action="store_true", help="continue the interrupted search in --storage")
    p.add_argument("--address", default=None,
                   help="Ray cluster to run on (default: RAY_ADDRESS, else Ray started in this process)")
    p.add_argument("--storage", default="runs/search",
                   help="folder or bucket URI (s3://bucket/searches, gs://..., file://...) of searches; this one goes "
                        "to STORAGE/<space name>. A bucket needs --study-storage")
    p.add_argument("--study-storage", default=None, metavar="URL",
                   help="database for the Optuna study, e.g. postgresql://user@db-host/optuna (every node of a "
                        "cluster reaches it); default: optuna.db in the search's folder (a bucket --storage needs it)")
    p.add_argument("--num-cpus", type=int, default=None, help="local mode: logical CPUs Ray may use (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler")
    p.add_argument("--cache-dir", default=str(default_cache_dir()), help="where rendered data splits are cached")
    _add_tracking_arguments(p)
    p.set_defaults(func=cmd_search)

    p = command("sync", "record in MLflow what a search's trials reported while the tracking server was down "
                        "(each value once; run it when the search is not running)")
    p.add_argument("search", metavar="SEARCH_DIR",
                   help="a search's folder (runs/search/<space name>, or s3://bucket/searches/<space name>)")
    p.add_argument("--tracking-uri", default=None,
                   help="the tracking server (default: the one the search recorded to, kept in the folder)")
    p.add_argument("--study-storage", default=None, metavar="URL",
                   help="the --study-storage the search ran with, when it holds a password (default: the "
                        "folder's optuna.db, or the URL the search kept in its folder)")
    p.set_defaults(func=cmd_sync)

    p = command("dashboard", "serve optuna-dashboard for a search's Optuna study on 127.0.0.1 and print its address "
                             "(optional extra: pip install -e '.[dashboard]')")
    p.add_argument("search", metavar="SEARCH_DIR",
                   help="a search's folder (runs/search/<space name>), its optuna.db, or the --study-storage URL it ran with")
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (0: any free one)")
    p.set_defaults(func=cmd_dashboard)
    return parser


EXIT_FAILED = 1
"""The work started and failed (a loss that diverged): nothing about the input was wrong."""
EXIT_REFUSED = 2
"""Refused before any work (no pretraining, no MLflow run, no Ray): bad input, or a store, folder
or cluster that cannot be used as asked. argparse's own usage errors exit 2 as well."""


def _error_line(exc: BaseException) -> str:
    # One line, whatever the message holds (a YAML error quotes the file over several lines).
    return "error: " + "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a refused input or a failed run prints one ``error: ...`` line on stderr
    and returns ``EXIT_REFUSED`` or ``EXIT_FAILED`` (``SURROGATE_SEARCH_DEBUG=1`` adds the traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from surrogate_search.plugins import add_plugins
    from surrogate_search.progress import configure_logging
    from surrogate_search.surrogates import SurrogateDivergedError

    try:
        # Plugins first: their tasks, metrics and losses belong in --help and in every check.
        plugins = argparse.ArgumentParser(add_help=False)
        plugins.add_argument("--plugin", action="append", default=[])
        add_plugins(plugins.parse_known_args(argv)[0].plugin)
        args = build_parser().parse_args(argv)
        configure_logging(logging.WARNING if args.quiet else logging.INFO)
        return args.func(args)
    except Exception as exc:
        if isinstance(exc, SurrogateDivergedError):
            code = EXIT_FAILED
        elif isinstance(exc, _refusals()):
            code = EXIT_REFUSED
        else:
            raise
        if os.environ.get("SURROGATE_SEARCH_DEBUG"):
            traceback.print_exc()
        print(_error_line(exc), file=sys.stderr)
        return code


def _refusals() -> tuple[type[BaseException], ...]:
    """The errors that mean bad input (exit status 2). The tracking store's error is looked up only
    if its module was imported, which an error of it implies: importing it means importing MLflow,
    and a refusal before any tracking took 4.1 s with it, 1.6-2.0 s without."""
    from surrogate_search.checkpoint import CheckpointError
    from surrogate_search.registry import UnknownNameError
    from surrogate_search.search.space import SpaceError

    refused: tuple[type[BaseException], ...] = (UnknownNameError, CheckpointError, SpaceError, ValueError,
                                                FileNotFoundError, FileExistsError, ImportError)
    store = sys.modules.get("surrogate_search.tracking.store")
    return refused + ((store.TrackingUnavailableError,) if store is not None else ())


if __name__ == "__main__":
    raise SystemExit(main())
