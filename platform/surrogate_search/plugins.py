"""User code that registers tasks and metrics, imported wherever surrogate-search runs.

A registration in a user's own module must also happen inside every Ray worker, which imports
``surrogate_search`` but not the user's script. Naming the module in ``SURROGATE_SEARCH_PLUGINS``
(comma-separated module names or ``.py`` paths) makes the package import it on every import,
in the driver and in each worker (Ray jobs pass environment variables to workers through
``runtime_env={"env_vars": ...}``); ``surrogate-search --plugin my_tasks ...`` sets it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

ENV_VAR = "SURROGATE_SEARCH_PLUGINS"


def plugin_names(value: str | None = None) -> list[str]:
    raw = os.environ.get(ENV_VAR, "") if value is None else value
    return [name.strip() for name in raw.split(",") if name.strip()]


def load_plugin(name: str) -> None:
    """Import ``name``: a module on ``sys.path`` (``my_tasks``) or a file (``./my_tasks.py``)."""
    if name.endswith(".py"):
        path = Path(name).resolve()
        if not path.is_file():
            raise ImportError(f"{ENV_VAR}: plugin file {name!r} does not exist")
        module_name = f"surrogate_search_plugin_{path.stem}"
        if module_name in sys.modules:
            return
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ImportError(f"{ENV_VAR}: cannot import plugin module {name!r} ({exc})") from exc


def load_plugins(value: str | None = None) -> list[str]:
    """Import every plugin named in ``value`` (default: the environment variable)."""
    names = plugin_names(value)
    for name in names:
        load_plugin(name)
    return names


def add_plugins(names: list[str]) -> None:
    """Import ``names`` now and export them so that child processes (Ray workers) import them too."""
    if not names:
        return
    merged = plugin_names() + [n for n in names if n not in plugin_names()]
    # Files become absolute: Ray workers and Tune trials run in other working directories.
    merged = [str(Path(n).resolve()) if n.endswith(".py") else n for n in merged]
    os.environ[ENV_VAR] = ",".join(merged)
    load_plugins()
