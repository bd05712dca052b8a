"""Fetch, verify and install a new tower version next to the running one.

An artifact is one file: a wheel or a zip archive whose root holds the
``mockfleet`` package tree (``mockfleet/tower/...``, ``mockfleet/mock/...``).
It is fetched (``s3://bucket/key`` with boto3, or a local absolute path),
its SHA-256 checked, unpacked to ``ROOT/versions/<version>/`` and
smoke-tested in a separate interpreter; only then does the tower re-exec
with that directory first on PYTHONPATH. Any failure leaves the running
version alone and is recorded in ``ROOT/upgrade-failed.json`` (the tower's
``/status`` reports it as ``upgrade_error``) until an upgrade succeeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
import zipfile

from mockfleet.tower.triggers import UpgradeRequest, atomic_write

MAX_ARTIFACT_BYTES = 512 * 1024 * 1024
MAX_MEMBERS = 20000
MARKER = ".mockfleet-version"
#: The last failed upgrade (``ROOT/upgrade-failed.json``); removed by a successful one.
FAILURE_FILE = "upgrade-failed.json"


class UpgradeError(Exception):
    """Why an upgrade was not applied."""


def _fetch(req: UpgradeRequest, dest: str) -> None:
    if req.source.startswith("s3://"):
        bucket, _, key = req.source[5:].partition("/")
        try:
            import boto3

            client = boto3.client("s3", endpoint_url=req.endpoint_url)
            client.download_file(bucket, key, dest)
        except Exception as exc:
            raise UpgradeError(f"cannot fetch {req.source}: {exc}") from None
        return
    try:
        if not os.path.isfile(req.source):
            raise UpgradeError(f"{req.source} is not a file")
        shutil.copyfile(req.source, dest)
    except OSError as exc:
        raise UpgradeError(f"cannot copy {req.source}: {exc.strerror or exc}") from None


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def build_artifact(path: str | os.PathLike[str], source_roots: list[str]) -> str:
    """Pack the ``mockfleet`` package trees found under each of ``source_roots``
    (namespace roots such as a checkout's ``tower/`` and ``mock/``) into a zip
    artifact at ``path``, in the layout :func:`install` expects; return its
    SHA-256 for the upgrade trigger."""
    with zipfile.ZipFile(path, "w") as zf:
        for top in source_roots:
            base = os.path.join(top, "mockfleet")
            for dirpath, _dirs, files in sorted(os.walk(base)):
                for name in sorted(files):
                    if name.endswith(".py"):
                        full = os.path.join(dirpath, name)
                        zf.write(full, os.path.relpath(full, top))
    return sha256_file(os.fspath(path))


def _extract(archive: str, target: str) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise UpgradeError(f"archive has more than {MAX_MEMBERS} members")
            if sum(i.file_size for i in infos) > MAX_ARTIFACT_BYTES:
                raise UpgradeError("archive unpacks to more than 512 MiB")
            for info in infos:
                name = info.filename
                parts = name.replace("\\", "/").split("/")
                if name.startswith("/") or ".." in parts:
                    raise UpgradeError(f"archive member {name!r} escapes its directory")
            names = {i.filename for i in infos}
            if "mockfleet/tower/__init__.py" not in names:
                raise UpgradeError("archive has no mockfleet/tower/__init__.py at its root")
            zf.extractall(target)
    except zipfile.BadZipFile as exc:
        raise UpgradeError(f"not a wheel or zip archive: {exc}") from None


def _smoke_test(site: str, timeout: float = 60.0) -> None:
    """Import the new tower in a fresh interpreter before betting the process on it."""
    env = dict(os.environ)
    base = env.get("MOCKFLEET_TOWER_BASE_PYTHONPATH", env.get("PYTHONPATH", ""))
    env["PYTHONPATH"] = site + (os.pathsep + base if base else "")
    # It also byte-compiles the whole new tree: the re-executed tower and its
    # zygote then load cached bytecode instead of compiling every module while
    # thousands of mocks wait to be supervised again.
    code = (
        "import sys, compileall;"
        f"compileall.compile_dir({site!r}, quiet=2, workers=1);"
        "import mockfleet.tower.supervisor as s, mockfleet.tower.cli, mockfleet.tower.zygote, "
        "mockfleet.mock.preload;"
        f"sys.exit(0 if s.__file__.startswith({site!r}) else 3)"
    )
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        # posix_spawn, not subprocess, and a wait on this pid only: the tower's
        # own reaper (waitpid(-1)) is not running while we are in here.
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-c", code],
            env,
            file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1)],
        )
    finally:
        os.close(devnull)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise UpgradeError("the new version's import check timed out")
        time.sleep(0.01)  # bounded wait for one short-lived check process
    rc = os.waitstatus_to_exitcode(status)
    if rc == 3:
        raise UpgradeError("the new version does not shadow the running one on sys.path")
    if rc != 0:
        raise UpgradeError(f"the new version fails to import (exit {rc})")


def install(root: str, req: UpgradeRequest) -> str:
    """Install ``req`` under ``root/versions`` and return the directory to put
    first on PYTHONPATH. Raises UpgradeError and leaves nothing half-done.

    The outcome is recorded for :func:`last_failure`: a failure replaces the
    record, a success removes it."""
    try:
        site = _install(root, req)
    except UpgradeError as exc:
        record_failure(root, req, str(exc))
        raise
    clear_failure(root)
    return site


def record_failure(root: str, req: UpgradeRequest, reason: str) -> None:
    """Remember why ``req`` was not applied (read back by :func:`last_failure`)."""
    record = {"version": req.version, "source": req.source, "reason": reason, "at": time.time()}
    data = (json.dumps(record, sort_keys=True) + "\n").encode()
    # Best effort: failing to note a failure must not hide the failure itself.
    with contextlib.suppress(OSError):
        tmp = os.path.join(root, "tmp")
        atomic_write(os.path.join(root, FAILURE_FILE), data, tmp if os.path.isdir(tmp) else None)


def clear_failure(root: str) -> None:
    """Forget the last failure (an upgrade succeeded)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(root, FAILURE_FILE))


def last_failure(root: str) -> dict[str, str] | None:
    """The last upgrade that failed and was not followed by a successful one:
    ``{"version", "source", "reason"}``, or None. An unreadable record is
    reported as such rather than dropped: it still means an upgrade failed."""
    path = os.path.join(root, FAILURE_FILE)
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read(64 * 1024))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"version": "", "source": "", "reason": f"{FAILURE_FILE} unreadable: {exc}"}
    if not isinstance(obj, dict):
        return {"version": "", "source": "", "reason": f"{FAILURE_FILE} is not an object"}
    return {key: str(obj.get(key) or "") for key in ("version", "source", "reason")}


def _install(root: str, req: UpgradeRequest) -> str:
    versions = os.path.join(root, "versions")
    os.makedirs(versions, mode=0o700, exist_ok=True)
    site = os.path.join(versions, req.version)
    marker = os.path.join(site, MARKER)
    if os.path.isfile(marker):
        with open(marker, encoding="ascii") as f:
            if f.read().strip() == req.sha256:
                _smoke_test(site)
                return site
        raise UpgradeError(f"version {req.version} is already installed with another sha256")
    tmp = os.path.join(root, "tmp", f".artifact.{os.getpid()}.{time.monotonic_ns()}")
    unpack = os.path.join(versions, f".{req.version}.{time.monotonic_ns()}")
    try:
        _fetch(req, tmp)
        got = sha256_file(tmp)
        if got != req.sha256:
            raise UpgradeError(f"sha256 mismatch: expected {req.sha256}, got {got}")
        os.makedirs(unpack, mode=0o700)
        _extract(tmp, unpack)
        with open(os.path.join(unpack, MARKER), "w", encoding="ascii") as f:
            f.write(req.sha256 + "\n")
        if os.path.exists(site):
            shutil.rmtree(site)
        os.rename(unpack, site)
        _smoke_test(site)
        return site
    except OSError as exc:
        raise UpgradeError(f"cannot install: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if os.path.exists(unpack):
            shutil.rmtree(unpack, ignore_errors=True)
