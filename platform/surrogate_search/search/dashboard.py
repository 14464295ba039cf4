"""``surrogate-search dashboard``: optuna-dashboard on a search's Optuna study, on 127.0.0.1 only.

The study is the search's SQLite file (``<storage>/<space name>/optuna.db``), so the dashboard shows
a search while it runs as well as after: every trial's parameters, its objective at each
evaluation (the ASHA curves), its state, and its user attributes, among them ``mlflow_run_id``,
the trial's MLflow run. optuna-dashboard is an optional extra: ``pip install -e '.[dashboard]'``.

    server = DashboardServer.open("runs/search/text_edit_distance", port=8080)
    print(server.url, server.study_url)      # http://127.0.0.1:8080 .../dashboard/studies/1
    server.serve_forever()                   # until Ctrl-C or SIGTERM; server.shutdown() from another thread
"""

from __future__ import annotations

import logging
import socketserver
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from surrogate_search.search.outcome import STUDY_DB
from surrogate_search.search.study import shown_url

HOST = "127.0.0.1"
INSTALL_HINT = "optuna-dashboard is not installed: pip install -e '.[dashboard]' (or pip install optuna-dashboard)"

log = logging.getLogger(__name__)


def study_storage(path: str | Path) -> str:
    """The Optuna storage URL of a search folder (or of its ``optuna.db`` file); a database URL
    (a search's ``--study-storage``) is returned as it is."""
    if "://" in str(path):
        return str(path)
    path = Path(path)
    file = path / STUDY_DB if path.is_dir() else path
    if not file.is_file():
        where = f"{path} holds no {STUDY_DB}" if path.is_dir() else f"no such file or folder: {path}"
        raise FileNotFoundError(f"{where}: pass a search's folder, e.g. runs/search/<space name>")
    return f"sqlite:///{file.resolve()}"


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser keeps connections open: they must not hold up the exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per request is noise here
        log.debug(format, *args)


@dataclass
class DashboardServer:
    """optuna-dashboard's WSGI app on a threaded server bound to 127.0.0.1."""

    server: Any
    storage: str
    studies: list[tuple[int, str, int]]
    """``(study id, study name, number of trials)`` for each study in the storage."""

    @classmethod
    def open(cls, search: str | Path, port: int = 8080) -> DashboardServer:
        """Bind ``port`` (0: any free one) for the study of ``search`` (a folder or ``optuna.db``)."""
        try:
            import optuna_dashboard
        except ImportError as exc:
            raise ImportError(INSTALL_HINT) from exc
        import optuna

        storage = study_storage(search)
        rdb = optuna.storages.RDBStorage(storage)
        ids = [rdb.get_study_id_from_name(s.study_name) for s in rdb.get_all_studies()]
        studies = [(i, rdb.get_study_name_from_id(i), len(rdb.get_all_trials(i, deepcopy=False))) for i in ids]
        if not studies:
            raise ValueError(f"{shown_url(storage)} holds no Optuna study yet: has the search started a trial?")
        app = optuna_dashboard.wsgi(rdb)
        try:
            server = make_server(HOST, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
        except OSError as exc:
            raise ValueError(f"cannot serve on {HOST}:{port} ({exc.strerror or exc}): pass another --port") from exc
        return cls(server, storage, studies)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server.server_port}"

    def study_url(self, study_id: int) -> str:
        return f"{self.url}/dashboard/studies/{study_id}"

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (from another thread), Ctrl-C or SIGTERM; then close the socket."""
        import signal
        import threading

        def stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        on_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, stop) if on_main else None
        try:
            self.server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            self.server.server_close()
            if on_main:
                signal.signal(signal.SIGTERM, previous)

    def shutdown(self) -> None:
        self.server.shutdown()
