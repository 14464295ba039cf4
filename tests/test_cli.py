from __future__ import annotations

import subprocess
import sys

import pytest

from surrogate_search.cli import main


def test_help_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "surrogate_search.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for command in ("tasks", "metrics", "pretrain"):
        assert command in out.stdout


def test_tasks_and_metrics_list_the_registries(capsys) -> None:
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "synthetic_text" in out and "imbalanced_tabular" in out and "edit_distance" in out
    assert main(["metrics"]) == 0
    out = capsys.readouterr().out
    assert "f1" in out and "iou" in out and "lower is better" in out


def test_unknown_task_is_a_clear_error(tmp_path, capsys) -> None:
    assert main(["pretrain", "--task", "synthetic_txt", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'synthetic_txt'" in err and "Did you mean 'synthetic_text'?" in err


def test_bad_option_syntax(tmp_path, capsys) -> None:
    assert main(["pretrain", "--task", "imbalanced_tabular", "--out", str(tmp_path), "--option", "dataset"]) == 2
    assert "expected KEY=VALUE, got 'dataset'" in capsys.readouterr().err
    assert not (tmp_path / "model.pt").exists()


def test_set_reads_numbers_as_a_user_writes_them() -> None:
    from surrogate_search.utils import parse_assignments

    parsed = parse_assignments(["lr=3e-5", "surrogate.lr=1.0e-3", "steps=40", "sampling.strategy=local", "amp=true",
                            "name=e5"])
    assert parsed == {"lr": 3e-5, "surrogate.lr": 1e-3, "steps": 40, "sampling.strategy": "local", "amp": True,
                      "name": "e5"}
    assert isinstance(parsed["lr"], float)
