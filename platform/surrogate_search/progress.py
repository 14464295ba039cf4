"""Progress of the long steps (pretraining, post-tuning, comparisons), and the log format.

On a terminal a step shows a bar (tqdm, on stderr) with its position, the latest validation metric
and an ETA; when stderr is not a terminal (a pipe, a file, CI) the same facts are one log line at
most every ``line_interval`` seconds, so a log never fills with carriage returns and is never
silent for long. Only rank 0 of a multi-worker run shows progress, and only while INFO logging is
on (``surrogate-search -q`` hides it). ``SURROGATE_SEARCH_PROGRESS=bar|lines|off`` overrides the
choice, ``SURROGATE_SEARCH_PROGRESS_INTERVAL`` the seconds between two lines::

    with Progress("pretrain synthetic_text", total=60, unit="epoch", upper_bound=True) as progress:
        for epoch in range(1, 61):
            ...                                     # progress.update(0.1) after a tenth of an epoch
            progress.reach(epoch, val="edit_distance 1.2345")

prints, when not on a terminal, lines such as::

    12:03:04 INFO    pretrain synthetic_text: epoch 3/60 (5%), val edit_distance 1.2345, 1:02 elapsed, at most 19:38 left
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, TextIO

log = logging.getLogger(__name__)

MODE_ENV = "SURROGATE_SEARCH_PROGRESS"
MODES = ("auto", "bar", "lines", "off")
INTERVAL_ENV = "SURROGATE_SEARCH_PROGRESS_INTERVAL"
LINE_INTERVAL_S = 30.0
"""Seconds between two progress lines when stderr is not a terminal (``$SURROGATE_SEARCH_PROGRESS_INTERVAL``
overrides it)."""

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
DATE_FORMAT = "%H:%M:%S"


def format_duration(seconds: float) -> str:
    """``75`` -> ``1:15``, ``3725`` -> ``1:02:05``."""
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_mode(mode: str | None = None, stream: TextIO | None = None) -> str:
    """``bar``, ``lines`` or ``off``: ``mode`` (else ``$SURROGATE_SEARCH_PROGRESS``, else ``auto``),
    where ``auto`` is a bar on a terminal and lines elsewhere."""
    chosen = (mode or os.environ.get(MODE_ENV) or "auto").strip().lower()
    if chosen not in MODES:
        raise ValueError(f"{MODE_ENV} must be one of {', '.join(MODES)}, got {chosen!r}")
    if chosen == "auto":
        stream = stream or sys.stderr
        chosen = "bar" if getattr(stream, "isatty", lambda: False)() else "lines"
    return chosen


class Progress:
    """``total`` units of work (``unit``: epoch, step, run) done in order, shown as a bar or as lines.

    ``update(n)`` adds ``n`` units (fractions allowed), ``reach(position)`` sets the position, and
    keyword arguments of either (``val="f1 0.8123"``) are shown beside the position from then on.
    ``upper_bound``: ``total`` is at most what will be done (early stopping), and the ETA says "at most".
    """

    def __init__(self, desc: str, total: float, *, unit: str = "step", initial: float = 0.0, rank: int = 0,
                 mode: str | None = None, line_interval: float | None = None, upper_bound: bool = False,
                 stream: TextIO | None = None) -> None:
        self.desc = desc
        self.total = float(total)
        self.unit = unit
        self.position = float(initial)
        self.upper_bound = upper_bound
        self.line_interval = line_interval if line_interval is not None else float(
            os.environ.get(INTERVAL_ENV) or LINE_INTERVAL_S)
        self.info: dict[str, str] = {}
        self._start_position = float(initial)
        self._started = time.monotonic()
        self._last_line = self._started
        self._bar: Any = None
        self.mode = "off" if rank != 0 or not log.isEnabledFor(logging.INFO) else progress_mode(mode, stream)
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.position, desc=desc, file=stream or sys.stderr,
                             leave=False, dynamic_ncols=True,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
            self._bar.set_postfix_str(self._where(), refresh=True)

    # --- what a caller does ------------------------------------------------------------------------
    def update(self, n: float = 1.0, *, force: bool = False, **info: Any) -> None:
        """``n`` more units done; ``force`` shows it now (a line, or a redrawn bar) whatever the interval."""
        self.reach(self.position + n, force=force, **info)

    def reach(self, position: float, *, force: bool = False, **info: Any) -> None:
        """The work is at ``position`` units (a finished epoch, an evaluated step)."""
        reached = min(float(position), self.total)
        step, self.position = reached - self.position, reached
        self.info.update({k: str(v) for k, v in info.items()})
        if self.mode == "bar":
            self._bar.set_postfix_str(self._where(), refresh=False)
            self._bar.update(step)
            if force:
                self._bar.refresh()
        elif self.mode == "lines":
            now = time.monotonic()
            if force or now - self._last_line >= self.line_interval:
                self._last_line = now
                log.info("%s", self.line(now))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- what is shown -----------------------------------------------------------------------------
    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the rate since this progress started; None before any work is done."""
        done = self.position - self._start_position
        if done <= 0:
            return None
        elapsed = (now if now is not None else time.monotonic()) - self._started
        return max(self.total - self.position, 0.0) * elapsed / done

    def line(self, now: float | None = None) -> str:
        """The lines mode's line: position, shown values, elapsed time and ETA."""
        now = now if now is not None else time.monotonic()
        eta = self.eta(now)
        left = "ETA unknown" if eta is None else f"{'at most ' if self.upper_bound else ''}{format_duration(eta)} left"
        return f"{self.desc}: {self._where()}, {format_duration(now - self._started)} elapsed, {left}"

    def _where(self) -> str:
        # Whole units as such; a fraction of the first unit (a long first epoch) with a digit more.
        digits = 0 if float(self.position).is_integer() else 2 if self.position < 1 else 1
        position = f"{self.position:.{digits}f}"
        total = f"{self.total:.0f}" if self.total.is_integer() else f"{self.total:.1f}"
        percent = 100.0 * self.position / self.total if self.total else 100.0
        parts = [f"{self.unit} {position}/{total} ({percent:.0f}%)"]
        parts += [f"{k} {v}" for k, v in self.info.items()]
        return ", ".join(parts)


class ProgressAwareHandler(logging.StreamHandler):
    """Writes each log line above the progress bars on the terminal, instead of through them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:
            self.handleError(record)


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Log lines with time and level (``12:03:04 INFO    ...``) on ``stream`` (default stdout),
    written above any progress bar. Like :func:`logging.basicConfig`, does nothing when the root
    logger already has handlers (a host application's, pytest's)."""
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt=DATE_FORMAT,
                        handlers=[ProgressAwareHandler(stream or sys.stdout)])
