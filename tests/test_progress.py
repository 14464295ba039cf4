"""Progress of long steps: a bar on a terminal, a line per update elsewhere, rank 0 only, with the
position, the latest validation metric and an ETA; log lines carry time and level."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys

import pytest

from surrogate_search.config import PostTuneConfig
from surrogate_search.posttune import WorkerContext, posttune
from surrogate_search.progress import Progress, format_duration

LINE = re.compile(r": (\w+) [\d.]+/\d+ \(\d+%\).*, \d+:\d\d elapsed, (at most )?\d+:\d\d left$")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def progress_lines(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """Progress as lines (what a pipe or CI sees), one per update, read back from the log."""
    monkeypatch.setenv("SURROGATE_SEARCH_PROGRESS", "lines")
    monkeypatch.setenv("SURROGATE_SEARCH_PROGRESS_INTERVAL", "0")
    caplog.set_level(logging.INFO, logger="surrogate_search")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "surrogate_search.progress"]


def test_lines_give_position_metric_and_eta(progress_lines) -> None:
    with Progress("pretrain demo", 10, unit="epoch", upper_bound=True) as progress:
        progress.update(0.5)
        progress.reach(2, val="f1 0.8123")
        progress.update(0.25)
    lines = progress_lines()
    assert lines[0].startswith("pretrain demo: epoch 0.50/10 (5%), ") and "at most" in lines[0]
    assert lines[1].startswith("pretrain demo: epoch 2/10 (20%), val f1 0.8123, ")
    assert lines[2].startswith("pretrain demo: epoch 2.2/10 (22%), val f1 0.8123, ")
    assert all(LINE.search(line) for line in lines), lines


def test_lines_wait_for_the_interval_unless_forced(progress_lines) -> None:
    progress = Progress("compare demo", 4, unit="run", line_interval=3600)
    progress.update(1)
    assert progress_lines() == []
    progress.update(1, force=True, last="proxy seed 1")
    (line,) = progress_lines()
    assert line.startswith("compare demo: run 2/4 (50%), last proxy seed 1, ") and LINE.search(line)


def test_a_terminal_gets_a_bar(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SURROGATE_SEARCH_PROGRESS", raising=False)
    caplog.set_level(logging.INFO, logger="surrogate_search")
    terminal = Terminal()
    with Progress("proxy seed 0", 8, unit="step", stream=terminal) as progress:
        assert progress.mode == "bar"
        for step in range(1, 5):
            progress.reach(step, val="f1 0.9000", force=step == 4)
    shown = terminal.getvalue()
    assert "proxy seed 0:  50%|" in shown
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, step 4/8 \(50%\), val f1 0\.9000\]", shown)  # elapsed<ETA
    assert not [r for r in caplog.records if r.name == "surrogate_search.progress"]


def test_only_rank_0_and_only_with_info_logging(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="surrogate_search")
    assert Progress("x", 1, rank=1).mode == "off"
    caplog.set_level(logging.WARNING, logger="surrogate_search")  # what -q does
    assert Progress("x", 1, mode="bar").mode == "off"


def test_durations_read_as_clock_time() -> None:
    assert (format_duration(75), format_duration(3725), format_duration(-1)) == ("1:15", "1:02:05", "0:00")


def test_posttuning_shows_its_progress_on_rank_0_only(progress_lines, tabular_checkpoint) -> None:
    config = PostTuneConfig.for_task(tabular_checkpoint.build_task(), {"method": "proxy", "steps": 4, "eval_every": 2})
    posttune(config, tabular_checkpoint, context=WorkerContext(rank=1))
    assert progress_lines() == []
    posttune(config, tabular_checkpoint)
    lines = progress_lines()
    # F1 is selected at the threshold chosen on val (selection=auto), and the line names what is compared.
    assert any(re.match(r"proxy seed 0: step 2/4 \(50%\), val f1_best_threshold [\d.]+, best [\d.]+, ", line) for line in lines), lines


def test_the_command_line_logs_time_level_and_progress(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "SURROGATE_SEARCH_PROGRESS_INTERVAL": "0"}
    done = subprocess.run([sys.executable, "-m", "surrogate_search.cli", "pretrain", "--task", "imbalanced_tabular",
                           "--out", str(tmp_path / "base"), "--max-epochs", "2"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    logged = [line for line in done.stdout.splitlines() if re.match(r"\d\d:\d\d:\d\d (INFO|WARNING) ", line)]
    assert any(" INFO    epoch   1 " in line for line in logged), done.stdout
    # Pretraining shows its progress within an epoch and at its end (the lines a pipe or CI sees).
    assert any(re.search(r" INFO    pretrain imbalanced_tabular: epoch 0\.\d\d/2 \(\d+%\), ", line) for line in logged)
    assert any(" INFO    pretrain imbalanced_tabular: epoch 2/2 (100%), val f1 " in line for line in logged)
    assert done.stdout.splitlines()[-3].startswith("checkpoint: ")  # results stay plain
