"""The README's plugin example works as written: the task and metric it registers show up in the
CLI, and the task pretrains and post-tunes through ``--plugin``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def readme_example(name: str) -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- readme-example: {re.escape(name)} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"README.md has no example marked {name}"
    return match.group(1)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "surrogate_search.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


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
