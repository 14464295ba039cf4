"""`platform/` must never shadow the standard-library module that torch, ray and mlflow import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Not `from conftest import REPO_ROOT`: with tests/tracking/conftest.py there are two modules named
# `conftest`, and which one that import finds depends on collection order.
REPO_ROOT = Path(__file__).resolve().parents[1]


def test_platform_folder_has_no_init() -> None:
    assert (REPO_ROOT / "platform" / "surrogate_search" / "__init__.py").exists()
    assert not (REPO_ROOT / "platform" / "__init__.py").exists()


def test_stdlib_platform_works_from_repo_root_with_package_importable() -> None:
    code = (
        "import platform, surrogate_search, torch, ray, mlflow; "
        "assert platform.__file__.endswith('platform.py'), platform.__file__; "
        "print(platform.system(), surrogate_search.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    system, version = out.stdout.split()
    assert system == "Linux" or system in {"Darwin", "Windows"}
    assert version.count(".") == 2
