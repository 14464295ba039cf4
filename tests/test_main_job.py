"""The main job (`make run`, jobs/main.py) in its smoke mode, as a user runs it: every step ends, the
report tables come back from MLflow, and what the job says it made is in MLflow and in its folder."""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_main_job_runs_every_step_and_reports_from_mlflow(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN_PATH"},
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # token auth on, a throwaway token
    db = tmp_path / "mlflow.db"
    done = subprocess.run([sys.executable, str(REPO_ROOT / "jobs" / "main.py"), "--smoke-test", "--runs",
                           str(tmp_path / "runs"), "--tracking-uri", f"sqlite:///{db}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    out = done.stdout
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    banners = re.findall(r"^=== (\d)\. ", out, re.M)
    assert banners == ["1", "2", "3", "4"]
    assert re.search(r"^search .*text_edit_distance_smoke: .*complete", out, re.M)
    # One report per comparison, each with a row per method, read back from MLflow.
    for experiment, methods in (("synthetic_text", ["proxy", "expected_edit_distance", "deep_embedding"]),
                                ("imbalanced_tabular_breast_cancer",
                                 ["proxy", "weighted_proxy", "anyloss", "deep_embedding", "relational"])):
        report = out.split(f"experiment {experiment}, comparison run ")[1].split("\nexperiment ")[0]
        rows = [line.split()[0] for line in report.splitlines() if re.match(r"^\w+\s+\d+\.\d{4} ± ", line)]
        assert rows == methods, report
    assert f"surrogate-search ui --tracking-uri sqlite:///{db} --experiment synthetic_text" in out
    assert "main job finished" in out

    with sqlite3.connect(db) as store:
        kinds = [row[0] for row in store.execute("SELECT value FROM tags WHERE key = 'run_kind'")]
        unfinished = store.execute("SELECT COUNT(*) FROM runs WHERE status != 'FINISHED' AND status != 'KILLED'").fetchone()[0]
    assert kinds.count("search") == 1 and kinds.count("comparison") == 2, kinds
    assert unfinished == 0
    # The base models stay in the job's folder for the next run to reuse.
    assert {p.name for p in (tmp_path / "runs").iterdir()} >= {"base_text", "base_tab_breast_cancer", "search"}
