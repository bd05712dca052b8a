"""The trigger directory interface: names, file formats, parsing and writers.

A tower watches ``ROOT/start``, ``ROOT/stop`` and ``ROOT/upgrade``. Anyone who
can write files there drives it, so everything read here is untrusted: the
parsers return a clear reason for every problem and never raise anything
else. Writers publish atomically (write a temporary file in ``ROOT/tmp``,
fsync, rename into place) so the tower never sees a half-written trigger.
See docs/triggers.md for the public contract.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Triggers larger than this are rejected unread.
MAX_TRIGGER_BYTES = 64 * 1024
MAX_ID_LENGTH = 200
MAX_INDEX = 1_000_000_000
_ID_RE = re.compile(r"[A-Za-z0-9._-]+")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
START_SUFFIX = ".json"
STATE_DIRS = ("start", "stop", "pids", "rejected", "tmp", "versions")


class TriggerError(ValueError):
    """A trigger that cannot be used; the message is the reason recorded."""


def check_mock_id(mock_id: str) -> str:
    """Return ``mock_id`` if it is a safe file name, else raise TriggerError."""
    if not mock_id:
        raise TriggerError("empty mock id")
    if len(mock_id) > MAX_ID_LENGTH:
        raise TriggerError(f"mock id longer than {MAX_ID_LENGTH} characters")
    if mock_id.startswith("."):
        raise TriggerError("mock id starts with a dot")
    if not _ID_RE.fullmatch(mock_id):
        raise TriggerError("mock id has characters outside [A-Za-z0-9._-]")
    return mock_id


def start_name_to_id(name: str) -> str:
    """``<mock-id>.json`` -> mock id (validated)."""
    if not name.endswith(START_SUFFIX):
        raise TriggerError(f"start triggers are named <mock-id>{START_SUFFIX}")
    return check_mock_id(name[: -len(START_SUFFIX)])


@dataclass(frozen=True, slots=True)
class StartRequest:
    """A parsed start trigger. ``restarts`` and ``not_before`` are set by the
    tower itself when it schedules a restart; writers normally leave them out."""

    mock_id: str
    lot: str
    index: int
    restarts: int = 0
    not_before: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"lot": self.lot, "index": self.index}
        if self.restarts:
            data["restarts"] = self.restarts
        if self.not_before:
            data["not_before"] = self.not_before
        return data


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    version: str
    source: str
    sha256: str
    endpoint_url: str | None = None


def read_trigger_bytes(path: str) -> bytes:
    """Read a trigger safely: no symlinks, no FIFOs or devices, bounded size."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the name is a symlink
            raise TriggerError("a symbolic link, not a regular file") from None
        raise TriggerError(f"unreadable: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)

        if not stat.S_ISREG(st.st_mode):
            raise TriggerError("not a regular file")
        if st.st_size > MAX_TRIGGER_BYTES:
            raise TriggerError(f"larger than {MAX_TRIGGER_BYTES} bytes")
        data = os.read(fd, MAX_TRIGGER_BYTES + 1)
        if len(data) > MAX_TRIGGER_BYTES:
            raise TriggerError(f"larger than {MAX_TRIGGER_BYTES} bytes")
        return data
    except OSError as exc:
        raise TriggerError(f"unreadable: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise TriggerError("not UTF-8 text") from None
    except RecursionError:
        raise TriggerError("JSON nested too deeply") from None
    except ValueError as exc:
        raise TriggerError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise TriggerError("the JSON document must be an object")
    return value


def _check_lot_path(lot: Any, root: str) -> str:
    if not isinstance(lot, str) or not lot:
        raise TriggerError("'lot' must be a non-empty string (the lot file's path)")
    if "\0" in lot or len(lot) > 4096:
        raise TriggerError("'lot' is not a usable path")
    if not os.path.isabs(lot):
        if ".." in Path(lot).parts:
            raise TriggerError("a relative 'lot' path must not contain '..'")
        lot = os.path.join(root, lot)
    return os.path.normpath(lot)


def parse_start(mock_id: str, data: bytes, root: str) -> StartRequest:
    """Validate a start trigger's content; relative lot paths are under ``root``."""
    obj = _json_object(data)
    unknown = set(obj) - {"lot", "index", "restarts", "not_before"}
    if unknown:
        raise TriggerError(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    if "lot" not in obj:
        raise TriggerError("missing field 'lot'")
    if "index" not in obj:
        raise TriggerError("missing field 'index'")
    lot = _check_lot_path(obj["lot"], root)
    index = obj["index"]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_INDEX:
        raise TriggerError(f"'index' must be an integer in 0..{MAX_INDEX}")
    restarts = obj.get("restarts", 0)
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
        raise TriggerError("'restarts' must be a non-negative integer")
    not_before = obj.get("not_before", 0.0)
    if (
        isinstance(not_before, bool)
        or not isinstance(not_before, int | float)
        or not math.isfinite(not_before)
    ):
        raise TriggerError("'not_before' must be a number (epoch seconds)")
    return StartRequest(mock_id, lot, index, restarts, float(not_before))


def parse_upgrade(data: bytes) -> UpgradeRequest:
    obj = _json_object(data)
    unknown = set(obj) - {"version", "source", "sha256", "endpoint_url"}
    if unknown:
        raise TriggerError(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    version = obj.get("version")
    if not isinstance(version, str):
        raise TriggerError("'version' must be a string")
    try:
        check_mock_id(version)
    except TriggerError as exc:
        raise TriggerError(f"'version' is not a safe name: {exc}") from None
    source = obj.get("source")
    if not isinstance(source, str) or not source or "\0" in source:
        raise TriggerError("'source' must be s3://bucket/key or a local path")
    if source.startswith("s3://"):
        bucket, _, key = source[5:].partition("/")
        if not bucket or not key:
            raise TriggerError("'source' must look like s3://bucket/key")
    elif not os.path.isabs(source):
        raise TriggerError("a local 'source' must be an absolute path")
    sha = obj.get("sha256")
    if not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha.lower()):
        raise TriggerError("'sha256' must be 64 hexadecimal digits")
    endpoint = obj.get("endpoint_url")
    if endpoint is not None and (
        not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://"))
    ):
        raise TriggerError("'endpoint_url' must be an http(s) URL")
    return UpgradeRequest(version, source, sha.lower(), endpoint)


def sanitize_name(name: str) -> str:
    """A harmless file name derived from an untrusted one (for rejected/)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100].lstrip(".")
    return safe or "unnamed"


# --------------------------------------------------------------------------- writers


def ensure_dirs(root: str | os.PathLike[str]) -> None:
    """Create the state directories (mode 0700) if missing."""
    os.makedirs(root, mode=0o700, exist_ok=True)
    for sub in STATE_DIRS:
        os.makedirs(os.path.join(root, sub), mode=0o700, exist_ok=True)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary(tmp_dir: str | os.PathLike[str], name: str) -> str:
    """A temporary's path for ``name``: a dot-file (the tower ignores those),
    unique to this process and moment."""
    return os.path.join(tmp_dir, f".{name}.{os.getpid()}.{time.monotonic_ns()}.tmp")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes,
    tmp_dir: str | os.PathLike[str] | None = None,
    sync_dir: bool = True,
    durable: bool = True,
) -> None:
    """Write ``data`` to ``path`` so readers see all of it or nothing: a temporary
    file (in ``tmp_dir``, same filesystem) is fsynced, then renamed into place.
    ``durable=False`` skips the fsyncs (the caller makes it durable later)."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    tmp_base = os.fspath(tmp_dir) if tmp_dir is not None else directory
    base = os.path.basename(path)
    tmp = _temporary(tmp_base, base)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, data)
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    if sync_dir and durable:
        fsync_dir(directory)


def _dumps(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), sort_keys=True) + "\n").encode()


def write_start(
    root: str | os.PathLike[str], mock_id: str, lot_path: str | os.PathLike[str], index: int
) -> Path:
    """Ask the tower at ``root`` to start device ``index`` of the lot as ``mock_id``."""
    target, data = _start_trigger(root, mock_id, lot_path, index)
    ensure_dirs(root)
    atomic_write(target, data, Path(root, "tmp"))
    return target


def _start_trigger(
    root: str | os.PathLike[str], mock_id: str, lot_path: str | os.PathLike[str], index: int
) -> tuple[Path, bytes]:
    """A start trigger's path and content; TriggerError for a bad id or index."""
    check_mock_id(mock_id)
    if isinstance(index, bool) or not 0 <= index <= MAX_INDEX:
        raise TriggerError(f"index must be an integer in 0..{MAX_INDEX}")
    lot = os.path.abspath(os.fspath(lot_path))
    return Path(root, "start", mock_id + START_SUFFIX), _dumps({"lot": lot, "index": index})


def write_starts(
    root: str | os.PathLike[str],
    starts: Iterable[tuple[str, str | os.PathLike[str], int]],
) -> list[Path]:
    """``write_start`` for each ``(mock_id, lot_path, index)``, made durable
    together (``atomic_write_many``). Every request is checked before
    anything is written: a bad one raises TriggerError and queues none of the
    batch."""
    todo = [_start_trigger(root, *start) for start in starts]
    if todo:
        ensure_dirs(root)
        atomic_write_many(todo, Path(root, "tmp"))
    return [target for target, _data in todo]


def atomic_write_many(
    items: Sequence[tuple[str | os.PathLike[str], bytes]], tmp_dir: str | os.PathLike[str]
) -> None:
    """``atomic_write`` for many files at once: every temporary file is written
    first, then made durable together (one ``syncfs`` from ``SYNCFS_FROM``
    files on, an fsync each below), then renamed into place, and each target
    directory is fsynced once. Two fsyncs per file cost about 1.2 ms of wall
    time here; a batch of 256 about 0.16 ms a file. If anything fails before
    the renames, no temporary is left and no file is published."""
    from mockfleet.tower.durable import SYNCFS_FROM, fsync_path
    from mockfleet.tower.linux import syncfs

    written: list[tuple[str, str]] = []
    try:
        for path, data in items:
            target = os.fspath(path)
            name = os.path.basename(target)
            tmp = _temporary(tmp_dir, name)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            written.append((tmp, target))
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
        if len(written) >= SYNCFS_FROM:
            syncfs(os.fspath(tmp_dir))
        else:
            for tmp, _target in written:
                fsync_path(tmp)
    except BaseException:
        for tmp, _target in written:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    for tmp, target in written:
        os.rename(tmp, target)
    for directory in dict.fromkeys(os.path.dirname(target) or "." for _tmp, target in written):
        fsync_dir(directory)


def write_stop(root: str | os.PathLike[str], mock_id: str) -> Path:
    """Ask the mock ``mock_id`` to stop (the tower force-kills it after the grace)."""
    check_mock_id(mock_id)
    ensure_dirs(root)
    target = Path(root, "stop", mock_id)
    atomic_write(target, b"", Path(root, "tmp"))
    return target


def write_upgrade(
    root: str | os.PathLike[str],
    version: str,
    source: str,
    sha256: str,
    endpoint_url: str | None = None,
) -> Path:
    """Ask the tower to install ``version`` from ``source`` and re-exec in place."""
    obj: dict[str, Any] = {"version": version, "source": source, "sha256": sha256}
    if endpoint_url is not None:
        obj["endpoint_url"] = endpoint_url
    data = _dumps(obj)
    parse_upgrade(data)  # the same checks the tower applies: fail early, here
    ensure_dirs(root)
    target = Path(root, "upgrade")
    atomic_write(target, data, Path(root, "tmp"))
    return target
