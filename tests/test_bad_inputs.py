"""Every case of ``bench/bad_inputs.py``, run as a user runs it (the real command in a subprocess,
two at a time, each with its own folder, MLflow store and process marker): refused with exit status
2 and one ``error: ...`` line naming what is wrong, no traceback, nothing written, no process left
running, no MLflow run. The bench script also times each case; a test does not assert on the clock."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _load_probe():
    spec = importlib.util.spec_from_file_location("bad_inputs", REPO_ROOT / "bench" / "bad_inputs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


bad_inputs = _load_probe()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    probe = bad_inputs.Probe.create(tmp_path_factory.mktemp("bad_inputs"))
    return {case.name: outcome for case, outcome in probe.run_all(bad_inputs.CASES, jobs=2)}


@pytest.mark.slow
@pytest.mark.parametrize("case", bad_inputs.CASES, ids=lambda case: case.name)
def test_bad_input_is_refused_before_any_work(outcomes, case) -> None:
    outcome = outcomes[case.name]
    assert outcome.broken == [], f"{case.name}: {outcome.last}"
    assert outcome.status == 2 and outcome.last.startswith("error: ")
