"""Where rendered data is cached between runs."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$SURROGATE_SEARCH_CACHE``, else ``~/.cache/surrogate-search``."""
    return Path(os.environ.get("SURROGATE_SEARCH_CACHE", Path.home() / ".cache" / "surrogate-search"))
