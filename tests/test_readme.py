"""The README's plugin examples work as written: the task, metric and loss they register show up in
the CLI, pretrain, post-tune, compare, search and reach MLflow through ``--plugin``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def readme_example(name: str) -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- readme-example: {re.escape(name)} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"README.md has no example marked {name}"
    return match.group(1)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "surrogate_search.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_plugin_example_registers_task_and_metric(tmp_path: Path) -> None:
    (tmp_path / "my_tasks.py").write_text(readme_example("my_tasks.py"), encoding="utf-8")

    tasks = cli("--plugin", "my_tasks.py", "tasks", cwd=tmp_path)
    assert tasks.returncode == 0, tasks.stderr
    assert "wine_rare" in tasks.stdout and "metric=f1" in tasks.stdout
    metrics = cli("--plugin", "my_tasks.py", "metrics", cwd=tmp_path)
    assert re.search(r"false_discovery_rate\s+lower is better", metrics.stdout)

    pre = cli("--plugin", "my_tasks.py", "pretrain", "--task", "wine_rare", "--out", "base", "--max-epochs", "5",
              cwd=tmp_path)
    assert pre.returncode == 0, pre.stderr
    assert re.search(r"test\s+f1 \d\.\d{4}", pre.stdout)

    # The post-tuning loads the checkpoint, which rebuilds the task by name: it must find the plugin.
    post = cli("--plugin", "my_tasks.py", "posttune", "--task", "wine_rare", "--checkpoint", "base",
               "--method", "anyloss", "--steps", "10", "--set", "eval_every=5", "--no-track", cwd=tmp_path)
    assert post.returncode == 0, post.stderr
    assert re.search(r"anyloss: base val f1 [\d.]+ -> val [\d.]+ .*test [\d.]+", post.stdout)


def test_missing_plugin_is_a_clear_error(tmp_path: Path) -> None:
    result = cli("--plugin", "no_such_tasks.py", "tasks", cwd=tmp_path)
    assert result.returncode == 2
    assert "no_such_tasks.py" in result.stderr and "does not exist" in result.stderr


def mlflow_runs(tracking_uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.slow
def test_loss_example_works_in_posttune_compare_search_and_mlflow(tmp_path: Path) -> None:
    (tmp_path / "my_losses.py").write_text(readme_example("my_losses.py"), encoding="utf-8")
    plugin = ("--plugin", "my_losses.py")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    pre = cli("pretrain", "--task", "imbalanced_tabular", "--out", "base", "--max-epochs", "5", cwd=tmp_path)
    assert pre.returncode == 0, pre.stderr

    # posttune, with the loss's own setting, recorded in MLflow.
    small = ("--steps", "6", "--set", "eval_every=3", "--set", "surrogate.warmup_steps=3",
             "--set", "surrogate.batch_size=8")
    post = cli(*plugin, "posttune", "--task", "imbalanced_tabular", "--checkpoint", "base", "--method",
               "huber_embedding", "--set", "huber_embedding.delta=0.05", *small, "--tracking-uri", uri, cwd=tmp_path)
    assert post.returncode == 0, post.stderr
    assert re.search(r"huber_embedding: base val f1 [\d.]+ -> val [\d.]+ .*test [\d.]+", post.stdout)
    (run,) = mlflow_runs(uri)
    assert run.data.tags["method"] == "huber_embedding" and run.data.tags["learned"] == "true"
    assert run.data.params["huber_embedding.delta"] == "0.05"
    assert "anyloss.amplification" not in run.data.params  # only the sections the method reads
    assert run.data.tags["surrogate_uri"] == f"runs:/{run.info.run_id}/surrogate"

    # A typo in its section names the known keys.
    typo = cli(*plugin, "posttune", "--task", "imbalanced_tabular", "--checkpoint", "base", "--method",
               "huber_embedding", "--set", "huber_embedding.delat=0.05", "--no-track", cwd=tmp_path)
    assert typo.returncode == 2 and "Did you mean 'huber_embedding.delta'?" in typo.stderr

    # compare: in the default set, with no --methods.
    comp = cli(*plugin, "compare", "--task", "imbalanced_tabular", "--checkpoint", "base", "--seeds", "1",
               *small, "--no-track", cwd=tmp_path)
    assert comp.returncode == 0, comp.stderr
    table = comp.stdout[comp.stdout.index("base (no tuning)"):comp.stdout.index("@val thr:")]  # rows, not the note
    methods = [line.split()[0] for line in table.splitlines()[1:] if " ± " in line]
    assert methods == ["proxy", "weighted_proxy", "anyloss", "deep_embedding", "relational", "huber_embedding"]

    # A YAML search space that searches the loss's own setting.
    space = {"name": "huber", "task": {"name": "imbalanced_tabular"}, "checkpoint": str(tmp_path / "base"),
             "objective": {"metric": "val/f1", "mode": "max"},
             "budget": {"trials": 1, "concurrency": 1, "workers_per_trial": 1, "scheduler": {"type": "none"}},
             "posttune": {"method": "huber_embedding", "steps": 4, "eval_every": 2, "surrogate.warmup_steps": 2,
                          "surrogate.batch_size": 8},
             "space": {"huber_embedding.delta": {"type": "float", "low": 0.01, "high": 1.0, "log": True}}}
    (tmp_path / "my_space.yaml").write_text(yaml.safe_dump(space), encoding="utf-8")
    search = cli(*plugin, "search", "my_space.yaml", "--storage", "searches", "--num-cpus", "2",
                 "--tracking-uri", uri, cwd=tmp_path)
    assert search.returncode == 0, search.stderr[-3000:]
    assert "huber_embedding.delta" in search.stdout and "1 complete" in search.stdout
    trial = next(r for r in mlflow_runs(uri) if r.data.tags.get("trial_key"))
    assert trial.data.tags["method"] == "huber_embedding"
    assert 0.01 <= float(trial.data.params["huber_embedding.delta"]) <= 1.0
