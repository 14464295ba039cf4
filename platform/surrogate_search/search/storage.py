"""Where a search's files live: ``--storage`` is a local folder or a URI that Ray accepts
(``s3://bucket/searches``, ``gs://bucket/searches``, ``file:///shared/searches``).

Ray gets the value unchanged (``RunConfig(storage_path=...)``) and resolves it with
``pyarrow.fs.FileSystem.from_uri``, as Ray Train's ``StorageContext`` does; checkpoints go there.
The search's own files (each trial's ``metrics.jsonl`` and ``mlflow_run.json``, ``best_config.yaml``,
``mlflow_search_id``) are read and written through the same pyarrow filesystem by
:class:`Location`, so the driver, a trial on any node and ``surrogate-search sync`` see one copy.

Credentials and endpoints come from the environment of every process that touches the bucket, as
for Ray itself: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` (an
S3-compatible server such as MinIO), ``GOOGLE_APPLICATION_CREDENTIALS``; or in the URI's query, as
pyarrow reads it (``s3://bucket/searches?endpoint_override=minio:9000&scheme=http``). A password in
the URI (``s3://KEY:SECRET@bucket``) is shown as ``***`` wherever a location is printed.

Example::

    search = Location.of("s3://bucket/searches") / "tabular_f1"
    (search / "best_config.yaml").read_text()
"""

from __future__ import annotations

import os
import threading
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

PROBE_TIMEOUT_S = 20.0
"""How long :func:`check_bucket` waits for a bucket to answer (S3's client retries a refused
connection for ~6 s; Google's retries for minutes)."""
_SECRET_QUERY_KEYS = ("secret", "token", "password", "key")
_RESOLVED: dict[str, tuple[Any, str]] = {}
"""Filesystems resolved in this process, by URI: resolving an S3 one asks the server for the bucket's region."""


class LocationError(ValueError):
    """A ``--storage`` value that names no storage this machine can use."""


def shown_uri(uri: str) -> str:
    """``uri`` fit for a log line or an error: a password and secret query values as ``***``."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}" if ":" in user else f"{user}@{host}"
    query = urlencode([(k, "***" if any(s in k.lower() for s in _SECRET_QUERY_KEYS) else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="*:/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class Location:
    """A file or folder under ``--storage``: a local path or a bucket URI, read and written
    through ``pyarrow.fs`` (the filesystem Ray Train persists checkpoints with). Joined with ``/``
    like a ``Path``; ``str()`` is the shown form (no password), :attr:`uri` what Ray is given.
    Picklable (a string), so Tune ships it to every trial."""

    __slots__ = ("uri", "_fs", "_path")

    def __init__(self, uri: str, _fs: Any = None, _path: str | None = None) -> None:
        self.uri = uri
        self._fs = _fs
        self._path = _path

    @classmethod
    def of(cls, value: str | os.PathLike[str] | Location) -> Location:
        """A path (made absolute), a ``file://`` URI (its path) or another URI (unchanged)."""
        if isinstance(value, Location):
            return value
        text = os.fspath(value)
        if text.startswith("file://"):
            return cls(str(Path(unquote(urlsplit(text).path)).resolve()))
        if "://" in text:
            return cls(text)
        return cls(str(Path(text).resolve()))

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri

    @property
    def local(self) -> Path:
        """The local path (a local location only)."""
        if not self.is_local:
            raise LocationError(f"{self} is not a local path")
        return Path(self.uri)

    def __fspath__(self) -> str:
        return str(self.local)

    def _split(self) -> tuple[str, str]:
        base, _, query = self.uri.partition("?")
        return base, query

    def __truediv__(self, name: str) -> Location:
        if self.is_local:
            return Location(str(Path(self.uri) / name))
        base, query = self._split()
        joined = base.rstrip("/") + "/" + str(name).strip("/")
        fs, path = (self._fs, f"{self._path.rstrip('/')}/{str(name).strip('/')}") if self._fs is not None else (None, None)
        return Location(joined + (f"?{query}" if query else ""), fs, path)

    @property
    def name(self) -> str:
        return Path(self.uri).name if self.is_local else PurePosixPath(urlsplit(self._split()[0]).path).name

    @property
    def parent(self) -> Location:
        if self.is_local:
            return Location(str(Path(self.uri).parent))
        base, query = self._split()
        return Location(base.rstrip("/").rsplit("/", 1)[0] + (f"?{query}" if query else ""))

    def __str__(self) -> str:
        return self.uri if self.is_local else shown_uri(self.uri)

    def __repr__(self) -> str:
        return f"Location({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __reduce__(self) -> tuple[Any, ...]:
        return Location, (self.uri,)

    @property
    def filesystem(self) -> tuple[Any, str]:
        """``(pyarrow filesystem, path in it)``, resolved as Ray resolves a ``storage_path``."""
        if self._fs is None:
            import pyarrow.fs

            if self.is_local:
                self._fs, self._path = pyarrow.fs.LocalFileSystem(), self.uri
            elif self.uri in _RESOLVED:
                self._fs, self._path = _RESOLVED[self.uri]
            else:
                try:
                    self._fs, self._path = _RESOLVED[self.uri] = pyarrow.fs.FileSystem.from_uri(self.uri)
                except Exception as exc:  # an unknown scheme, a malformed URI
                    raise LocationError(f"--storage {self}: not a storage Ray can use ({first_line(exc)}); pass a "
                                        f"folder, or an s3://, gs:// or file:// URI") from None
        return self._fs, str(self._path)

    def _info(self) -> Any:
        fs, path = self.filesystem
        return fs.get_file_info(path)

    def exists(self) -> bool:
        import pyarrow.fs

        return self._info().type != pyarrow.fs.FileType.NotFound

    def is_dir(self) -> bool:
        import pyarrow.fs

        return self._info().type == pyarrow.fs.FileType.Directory

    def is_file(self) -> bool:
        import pyarrow.fs

        return self._info().type == pyarrow.fs.FileType.File

    def mkdir(self) -> None:
        fs, path = self.filesystem
        fs.create_dir(path, recursive=True)

    def read_text(self) -> str:
        if not self.is_file():
            raise FileNotFoundError(f"no file {self}")
        fs, path = self.filesystem
        with fs.open_input_stream(path) as stream:
            return stream.read().decode("utf-8")

    def write_text(self, text: str) -> None:
        """Write the whole file (an object in a bucket is put whole: readers see the old or the new text)."""
        fs, path = self.filesystem
        if self.is_local:
            fs.create_dir(str(Path(path).parent), recursive=True)
        with fs.open_output_stream(path) as stream:
            stream.write(text.encode("utf-8"))

    @property
    def appendable(self) -> bool:
        """Whether :meth:`append_text` works: on a local disk; an object in a bucket cannot grow."""
        return self.is_local

    def append_text(self, text: str) -> None:
        path = self.local
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as out:
            out.write(text)

    def iterdir(self) -> list[Location]:
        """The entries right under this folder (none when it does not exist), by name."""
        import pyarrow.fs

        fs, path = self.filesystem
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True, recursive=False))
        return sorted((self / PurePosixPath(i.path).name for i in infos), key=lambda loc: loc.name)

    def glob(self, pattern: str) -> list[Location]:
        """Files and folders whose path below this folder matches ``pattern`` part by part
        (``*/mlflow_run.json``); one listing of the folder, however deep."""
        import pyarrow.fs

        fs, path = self.filesystem
        wanted = PurePosixPath(pattern)
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True,
                                                         recursive=len(wanted.parts) > 1))
        root = path.rstrip("/") + "/"
        found = []
        for info in infos:
            relative = PurePosixPath(info.path[len(root):] if info.path.startswith(root) else info.path)
            if len(relative.parts) == len(wanted.parts) and relative.match(pattern):
                found.append(relative)
        out = []
        for relative in sorted(found):
            location = self
            for part in relative.parts:
                location = location / part
            out.append(location)
        return out


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_bucket(location: Location, timeout_s: float | None = None) -> None:
    """Before any work: the bucket under ``location`` answers, exists, and takes a write (an
    object put and deleted again). Raises :class:`LocationError` naming the location (its password
    hidden) and why, within ``timeout_s`` (default :data:`PROBE_TIMEOUT_S`) even when the bucket's
    server never answers."""
    import pyarrow.fs

    outcome: dict[str, BaseException | None] = {}

    # Resolved afresh: the environment (endpoint, credentials) may have changed since it was last.
    _RESOLVED.pop(location.uri, None)
    location = Location(location.uri)

    def probe() -> None:
        try:
            fs, path = location.filesystem  # an unknown scheme fails here; S3 asks for the bucket's region
            bucket = path.strip("/").split("/")[0]
            if fs.get_file_info(bucket).type == pyarrow.fs.FileType.NotFound:
                raise FileNotFoundError(f"there is no bucket {bucket!r}")
            marker = f"{path.rstrip('/')}/.surrogate_search_write_check"
            with fs.open_output_stream(marker) as stream:
                stream.write(b"")
            fs.delete_file(marker)
            outcome["error"] = None
        except BaseException as exc:  # reported by the caller's thread
            outcome["error"] = exc

    # A daemon thread: a server that never answers (a gs:// bucket without network or credentials
    # retries for minutes) costs the timeout, not the search.
    worker = threading.Thread(target=probe, name="bucket-check", daemon=True)
    worker.start()
    limit = PROBE_TIMEOUT_S if timeout_s is None else timeout_s
    worker.join(limit)
    if "error" not in outcome:
        raise LocationError(f"--storage {location}: the bucket did not answer within {limit:g} s; check its name, "
                            f"the network and the credentials (e.g. AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
                            f"GOOGLE_APPLICATION_CREDENTIALS)")
    error = outcome["error"]
    if isinstance(error, LocationError):
        raise error
    if error is not None:
        raise LocationError(f"--storage {location}: cannot use it ({shown_uri(first_line(error))})")
