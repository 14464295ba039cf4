"""Bad input, as a user types it: every case runs the real ``surrogate-search`` command in a
subprocess, in its own empty folder, with a throwaway MLflow SQLite store and data cache.

Each case must be refused before any work: exit status 2, a last stderr line ``error: ...`` that
names the bad key or value, no traceback, within 30 s, nothing written to its folder (no ``runs/``,
no search storage), no process left behind (Ray's included), no MLflow run. Every check runs before
pretraining, so no case needs a base model. Prints one line per case (name, exit status, seconds,
last line of stderr) and exits 1 if any case breaks a rule. ``tests/test_bad_inputs.py`` runs the
same cases, without the clock.

    PYTHONPATH=platform python bench/bad_inputs.py
    PYTHONPATH=platform python bench/bad_inputs.py --only steps_0,seeds_0
"""

from __future__ import annotations

import argparse
import os
import pickle
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE = REPO_ROOT / "search_spaces" / "tabular_f1_smoke.yaml"
LIMIT_S = 30.0
EXIT_REFUSED = 2


@dataclass
class Case:
    name: str
    argv: list[str]
    """Arguments after ``surrogate-search``; ``{work}`` is the probe's folder, ``{port}`` a closed port."""
    names: str
    """What the error line must name (the key or value at fault)."""


TABULAR = ["--task", "imbalanced_tabular"]
SEARCH = ["search", str(SMOKE), "--set", "budget.workers_per_trial=1"]
"""The smoke space with one-worker trials: they fit any machine, so a case fails only for its own reason."""
CASES = [
    Case("unknown_set_key", ["posttune", *TABULAR, "--set", "surrogate.widht=32"], "surrogate.widht"),
    Case("steps_0", ["posttune", *TABULAR, "--steps", "0"], "steps"),
    Case("seeds_0", ["compare", *TABULAR, "--seeds", "0"], "--seeds"),
    Case("lr_huge", ["posttune", *TABULAR, "--set", "lr=1e30"], "lr"),
    Case("lr_negative", ["posttune", *TABULAR, "--set", "lr=-1"], "lr"),
    Case("lr_not_a_number", ["posttune", *TABULAR, "--set", "lr=fast"], "'fast'"),
    Case("unknown_task", ["posttune", "--task", "imbalanced_tabuar"], "imbalanced_tabuar"),
    Case("unknown_option", ["posttune", *TABULAR, "--option", "datasett=digits"], "datasett"),
    Case("unknown_method", ["compare", *TABULAR, "--methods", "proxy,anylos"], "anylos"),
    Case("space_yaml_syntax", ["search", "{work}/broken.yaml"], "line 3, column 6"),
    Case("space_low_above_high", ["search", "{work}/low_above_high.yaml"], "space.surrogate.width.low"),
    Case("unplaceable_trial", [*SEARCH, "--set", "budget.gpus_per_worker=64"], "budget.gpus_per_worker"),
    Case("garbage_checkpoint", ["posttune", *TABULAR, "--checkpoint", "{work}/garbage"], "not a valid"),
    Case("checkpoint_with_code", ["posttune", *TABULAR, "--checkpoint", "{work}/malicious"], "not a safe checkpoint"),
    Case("checkpoint_data_changed", ["posttune", *TABULAR, "--checkpoint", "{work}/stale"],
         "surrogate-search pretrain --task imbalanced_tabular"),
    Case("checkpoint_file_missing", ["posttune", *TABULAR, "--checkpoint", "{work}/missing.pt"], "missing.pt"),
    Case("space_garbage_checkpoint", [*SEARCH, "--set", "checkpoint={work}/garbage", "--storage", "{work}/searches"],
         "not a valid"),
    Case("space_checkpoint_data_changed", [*SEARCH, "--set", "checkpoint={work}/stale", "--storage", "{work}/searches"],
         "surrogate-search pretrain --task imbalanced_tabular"),
    Case("resume_missing_search", [*SEARCH, "--resume", "--storage", "{work}/searches"], "--resume"),
    Case("compare_missing_search", ["compare", "--from-search", "{work}/searches/nowhere"], "nowhere"),
    Case("storage_not_writable", [*SEARCH, "--storage", "{work}/a_file/searches"], "a_file"),
    Case("bucket_without_study_storage", [*SEARCH, "--storage", "s3://bucket/searches"], "--study-storage"),
    Case("tracking_server_down", ["posttune", *TABULAR, "--tracking-uri", "http://127.0.0.1:{port}"],
         "127.0.0.1:{port}"),
    Case("search_tracking_server_down", [*SEARCH, "--tracking-uri", "http://127.0.0.1:{port}", "--storage",
                                         "{work}/searches"], "127.0.0.1:{port}"),
]


def _stale_checkpoint(folder: Path) -> None:
    """A base checkpoint whose task's data changed after it was pretrained (as recorded in its
    fingerprint: 100 training samples more, other validation labels). Untrained: it is refused first."""
    import torch

    from surrogate_search.checkpoint import save_checkpoint
    from surrogate_search.tasks import get_task

    task = get_task("imbalanced_tabular")
    file = save_checkpoint(folder, task, task.build_model(), task.default_model_options(), splits=task.splits())
    payload = torch.load(file, weights_only=True)
    payload["fingerprint"]["split_sizes"]["train"] += 100
    payload["fingerprint"]["labels"]["val"] = "0123456789abcdef"
    torch.save(payload, file)


class _RunsCode:
    def __reduce__(self) -> tuple:
        return os.system, ("touch PWNED",)


@dataclass
class Outcome:
    status: int
    seconds: float
    last: str
    """The last non-empty line of stderr."""
    broken: list[str] = field(default_factory=list)
    """Every rule the case broke, the clock aside."""


@dataclass
class Probe:
    """A folder with the files the cases point at, and the environment they run in."""

    work: Path
    env: dict[str, str]
    marker: str
    """In every case's environment: a process carrying it belongs to a case."""
    port: int

    @classmethod
    def create(cls, work: Path) -> Probe:
        (work / "broken.yaml").write_text("name: broken\ntask: {name: imbalanced_tabular\nspace:\n  lr: [1e-4, 1e-2\n")
        smoke = SMOKE.read_text(encoding="utf-8")
        (work / "low_above_high.yaml").write_text(smoke.replace("surrogate.width: {type: int, low: 8, high: 32",
                                                                "surrogate.width: {type: int, low: 32, high: 8"))
        (work / "garbage").mkdir()
        (work / "garbage" / "model.pt").write_text("not a checkpoint, just text\n" * 100)
        (work / "malicious").mkdir()
        # A pickle (Python's default protocol) that runs `touch PWNED` when loaded unsafely; pickling
        # it runs nothing.
        (work / "malicious" / "model.pt").write_bytes(pickle.dumps(_RunsCode()))
        (work / "a_file").write_text("a file where a folder is expected\n")
        _stale_checkpoint(work / "stale")
        marker = f"probe-{secrets.token_hex(8)}"
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT / "platform"), os.environ.get("PYTHONPATH")) if p),
               # Token authentication on, should a case start Ray.
               "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        env.pop("SURROGATE_SEARCH_DEBUG", None)
        env.pop("RAY_ADDRESS", None)
        with socket.socket() as sock:  # a port nothing listens on
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return cls(work, env, marker, port)

    def case_env(self, case: Case) -> dict[str, str]:
        """The probe's environment, with the case's own marker, MLflow store and data cache: cases that
        run at the same time cannot take each other's processes, runs or files."""
        return {**self.env, "SURROGATE_SEARCH_PROBE": f"{self.marker}/{case.name}",
                "MLFLOW_TRACKING_URI": f"sqlite:///{self.work / 'stores' / case.name / 'mlflow.db'}",
                "SURROGATE_SEARCH_CACHE": str(self.work / "caches" / case.name)}

    def run(self, case: Case) -> Outcome:
        return self.finish(self.start(case))

    def run_all(self, cases: list[Case], jobs: int = 1) -> Iterator[tuple[Case, Outcome]]:
        """Every case, ``jobs`` at a time (each is mostly Python starting up), in order."""
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            yield from zip(cases, pool.map(self.run, cases))

    def start(self, case: Case) -> Running:
        """Start one case in its own empty folder."""
        folder = self.work / "cases" / case.name
        folder.mkdir(parents=True)
        (self.work / "stores" / case.name).mkdir(parents=True)
        argv = [a.format(work=self.work, port=self.port) for a in case.argv]
        process = subprocess.Popen([sys.executable, "-m", "surrogate_search.cli", *argv], cwd=folder,
                                   env=self.case_env(case), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        return Running(case, folder, process, time.perf_counter())

    def finish(self, running: Running) -> Outcome:
        case, folder, process = running.case, running.folder, running.process
        try:
            stderr = process.communicate(timeout=4 * LIMIT_S)[1]
        except subprocess.TimeoutExpired:  # it started working (pretraining, retrying): stop it and all it started
            os.killpg(process.pid, signal.SIGKILL)
            stderr = process.communicate()[1]
        seconds = time.perf_counter() - running.started
        lines = [line for line in stderr.splitlines() if line.strip()]
        outcome = Outcome(process.returncode, seconds, lines[-1] if lines else "")
        names = case.names.format(port=self.port)
        if outcome.status != EXIT_REFUSED:
            outcome.broken.append(f"exit status {outcome.status}, expected {EXIT_REFUSED}")
        if "Traceback" in stderr:
            outcome.broken.append("traceback")
        if not outcome.last.startswith("error: "):
            outcome.broken.append("the last line is not `error: ...`")
        elif names not in outcome.last:
            outcome.broken.append(f"the error does not name {names!r}")
        if "weights_only" in stderr:
            outcome.broken.append("repeats torch's advice to load with weights_only=False")
        left = sorted(str(p.relative_to(folder)) for p in folder.iterdir())
        if left:
            outcome.broken.append(f"left {left} in its folder")
        if (self.work / "searches").exists():
            outcome.broken.append("created the search storage folder")
        if (self.work / "PWNED").exists() or (folder / "PWNED").exists():
            outcome.broken.append("RAN THE CODE IN A CHECKPOINT")
        processes = self.leftover_processes(case)
        if processes:
            outcome.broken.append(f"left processes running: {processes}")
        runs = self.mlflow_runs(case)
        if runs:
            outcome.broken.append(f"{runs} MLflow run(s) in its store")
        return outcome

    def leftover_processes(self, case: Case | None = None) -> list[str]:
        """Processes still running with the marker of this probe (or of one case) in their
        environment: what a case started (Ray's raylet, GCS, workers, dashboard; a pretraining
        process) and did not stop."""
        wanted = f"SURROGATE_SEARCH_PROBE={self.marker}/{case.name}\0" if case else f"SURROGATE_SEARCH_PROBE={self.marker}/"
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                if wanted.encode() in (entry / "environ").read_bytes():
                    command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    found.append(f"{entry.name} {command[:120]}")
            except OSError:  # gone meanwhile, or not ours to read
                continue
        return found

    def mlflow_runs(self, case: Case | None = None) -> int:
        """MLflow runs in one case's store, or in all of them."""
        total = 0
        for db in ([self.work / "stores" / case.name / "mlflow.db"] if case else (self.work / "stores").glob("*/mlflow.db")):
            if not db.exists():
                continue
            with sqlite3.connect(db) as conn:
                has_table = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='runs'").fetchone()
                total += conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if has_table else 0
        return total


@dataclass
class Running:
    case: Case
    folder: Path
    process: subprocess.Popen
    started: float


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated case names (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="cases run at the same time (1: each timed alone)")
    args = parser.parse_args()
    cases = [c for c in CASES if args.only is None or c.name in args.only.split(",")]

    probe = Probe.create(Path(tempfile.mkdtemp(prefix="bad_inputs_")))
    failed = 0
    print(f"{'case':28s} {'exit':>4s} {'seconds':>7s}  last line of stderr")
    for case, outcome in probe.run_all(cases, args.jobs):
        if outcome.seconds > LIMIT_S:
            outcome.broken.append(f"took {outcome.seconds:.0f} s (> {LIMIT_S:.0f} s)")
        print(f"{case.name:28s} {outcome.status:4d} {outcome.seconds:7.1f}  {outcome.last}", flush=True)
        for why in outcome.broken:
            print(f"{'':28s} FAIL: {why}")
        failed += bool(outcome.broken)
    left = probe.leftover_processes()
    print(f"processes left behind by the cases: {len(left)}" + "".join(f"\n  {p}" for p in left))
    print(f"MLflow runs in the cases' stores ({probe.work / 'stores'}): {probe.mlflow_runs()}")
    print(f"{len(cases) - failed}/{len(cases)} cases refused cleanly (folder: {probe.work})")
    return 1 if failed or left or probe.mlflow_runs() else 0


if __name__ == "__main__":
    raise SystemExit(main())
