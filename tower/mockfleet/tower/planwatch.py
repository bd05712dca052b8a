"""The plan watcher: a mounted plan (a ConfigMap volume) turned into triggers.

A tower on Kubernetes gets its lot and its share of devices from a ConfigMap
projected into ``plan_dir`` by the kubelet; a tower on a VM is driven by
trigger files. The watcher bridges the two so both run one code path: it
reads the plan, compares this node's desired devices with what the tower
runs (``ROOT/pids``) and is about to run (``ROOT/start``), and writes the
start, stop and upgrade triggers that close the gap.

The sync is level-triggered: it always compares whole states, never applies
events, so a missed inotify event, a crash or a half-finished sync is
repaired by the next one (every ``resync_interval`` seconds at the latest).

The kubelet updates the volume with an atomic swap of the ``..data`` symlink
(new timestamped directory, ``..data_tmp`` renamed over ``..data``, old
directory deleted). Both files are read from one resolved ``..data`` target,
so ``lot.yaml`` and ``plan.json`` always belong to the same update. See
docs/kubernetes-plan.md.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import selectors
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from mockfleet.tower.linux import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_IGNORED,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    Inotify,
)
from mockfleet.tower.plan import (
    Plan,
    PlanError,
    desired_devices,
    diff,
    from_ranges,
    indexes_of,
    next_launched,
    parse_plan,
    plan_mock_id,
    settled_devices,
    to_ranges,
)
from mockfleet.tower.triggers import (
    START_SUFFIX,
    StartRequest,
    TriggerError,
    atomic_write,
    atomic_write_many,
    ensure_dirs,
    parse_upgrade,
    read_trigger_bytes,
    write_upgrade,
)

LOT_KEY = "lot.yaml"
PLAN_KEY = "plan.json"
DATA_LINK = "..data"
#: A ConfigMap holds at most 1 MiB; anything bigger is not a plan.
MAX_PLAN_BYTES = 4 * 1024 * 1024
DEFAULT_RESYNC = 10.0
IN_MOVED_FROM = 0x00000040
#: Names in the plan directory whose change means "read the plan again".
_PLAN_NAMES = frozenset({DATA_LINK, LOT_KEY, PLAN_KEY})

Logger = Callable[..., None]


def stderr_log(msg: str, **fields: Any) -> None:
    """A structured (JSON) line on stderr."""
    record = {"ts": round(time.time(), 3), "component": "planwatch", "msg": msg, **fields}
    print(json.dumps(record, default=str), file=sys.stderr, flush=True)


class PlanProblem(Exception):
    """The mounted plan cannot be used; ``file`` names the culprit."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Projection:
    """One consistent read of the plan directory."""

    source: str  # the directory both files were read from
    lot_bytes: bytes
    plan_bytes: bytes

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.lot_bytes, b"\0", self.plan_bytes):
            h.update(part)
        return h.hexdigest()


def _read_capped(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read(MAX_PLAN_BYTES + 1)
    if len(data) > MAX_PLAN_BYTES:
        raise PlanProblem(path, f"larger than {MAX_PLAN_BYTES} bytes")
    return data


def read_projection(plan_dir: str, attempts: int = 5) -> Projection:
    """Read ``lot.yaml`` and ``plan.json`` from one version of the plan directory.

    With a kubelet projection both come from the directory ``..data`` points
    at; if a swap removes it under us, the link is resolved again. Without
    ``..data`` (plain files, e.g. on a VM) the files are read directly: their
    writer should replace them by rename.
    """
    link = os.path.join(plan_dir, DATA_LINK)
    for _ in range(attempts):
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            base = plan_dir
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: ..data is not a symlink
                raise PlanProblem(link, f"unreadable: {exc.strerror or exc}") from None
            base = link
        else:
            base = os.path.join(plan_dir, target)
        try:
            plan_bytes = _read_capped(os.path.join(base, PLAN_KEY))
            lot_bytes = _read_capped(os.path.join(base, LOT_KEY))
        except FileNotFoundError as exc:
            if base != plan_dir and _resolves_elsewhere(link, base, plan_dir):
                continue  # swapped while we read: read the new version
            raise PlanProblem(str(exc.filename), "missing") from None
        except OSError as exc:
            raise PlanProblem(str(exc.filename), f"unreadable: {exc.strerror or exc}") from None
        return Projection(base, lot_bytes, plan_bytes)
    raise PlanProblem(link, f"changed {attempts} times while being read")


def _resolves_elsewhere(link: str, base: str, plan_dir: str) -> bool:
    try:
        return os.path.join(plan_dir, os.readlink(link)) != base
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class LoadedPlan:
    """A validated projection and where its lot copy lives."""

    plan: Plan
    lot_path: str
    digest: str


@dataclass
class SyncResult:
    """What one sync did (for logs and tests)."""

    started: list[int] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    upgrade: str | None = None
    error: str | None = None
    desired: int = 0


@dataclass
class _LotState:
    """Per lot, persisted in ROOT/planwatch/<lot>.json (survives tower re-exec)."""

    launched: set[int] = field(default_factory=set)
    upgrade_requested: str | None = None


class PlanWatcher:
    """Keeps the tower at ``root`` running ``node_name``'s share of the plan in ``plan_dir``.

    Selector-loop integration (the tower's or :func:`serve`'s)::

        sel.register(w.fileno(), selectors.EVENT_READ)  # ready -> w.on_readable()
        timeout = min(other_timeouts, w.seconds_until_resync())
        w.poll()  # after each loop turn: resyncs when due

    ``tower_version`` (when known) returns the version the tower runs; an
    upgrade object naming it writes no trigger.
    """

    def __init__(
        self,
        plan_dir: str | os.PathLike[str],
        root: str | os.PathLike[str],
        node_name: str,
        *,
        lot_copy_dir: str | os.PathLike[str] | None = None,
        resync_interval: float = DEFAULT_RESYNC,
        tower_version: Callable[[], str | None] | None = None,
        log: Logger = stderr_log,
    ) -> None:
        if not node_name:
            raise ValueError("node name is empty")
        if not resync_interval > 0:
            raise ValueError("resync interval must be positive")
        self.plan_dir = os.path.abspath(plan_dir)
        self.root = os.path.abspath(root)
        self.node = node_name
        self.lot_dir = os.path.abspath(lot_copy_dir or os.path.join(self.root, "lots"))
        self.state_dir = os.path.join(self.root, "planwatch")
        self.resync_interval = resync_interval
        self.tower_version = tower_version
        self.log = log
        ensure_dirs(self.root)
        os.makedirs(self.lot_dir, mode=0o700, exist_ok=True)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self.dirs = {k: os.path.join(self.root, k) for k in ("start", "stop", "pids")}
        self.inotify = Inotify()
        self._plan_wd: int | None = None
        self._pids_wd = self.inotify.add_watch(
            self.dirs["pids"], IN_DELETE | IN_MOVED_FROM | IN_ONLYDIR
        )
        self._loaded: LoadedPlan | None = None
        self._states: dict[str, _LotState] = {}
        self._last_error: str | None = None
        #: mock ids wanted again while their stop is in progress: their exit triggers a sync
        self._awaiting_exit: set[str] = set()
        #: versions asked of the tower during this process's life (see _upgrade)
        self._asked: set[str] = set()
        self._next_resync = 0.0
        self.syncs = 0
        self._watch_plan_dir()

    # ------------------------------------------------------------------ selector hooks

    def fileno(self) -> int:
        """The inotify fd: readable when the plan directory (or a stopping mock) changed."""
        return self.inotify.fileno()

    def on_readable(self) -> SyncResult | None:
        """Drain inotify; sync when the plan changed or an awaited mock exited."""
        wanted = False
        for ev in self.inotify.read():
            if ev.mask & IN_Q_OVERFLOW:
                wanted = True
            elif ev.wd == self._plan_wd:
                if ev.mask & IN_IGNORED:
                    self._plan_wd = None  # the directory went away; re-watched at resync
                    wanted = True
                elif ev.name in _PLAN_NAMES:
                    wanted = True
            elif ev.wd == self._pids_wd and ev.name in self._awaiting_exit:
                wanted = True
        return self.sync() if wanted else None

    def seconds_until_resync(self) -> float:
        """How long the caller's select may block before :meth:`poll` is due."""
        return max(0.0, self._next_resync - time.monotonic())

    def poll(self) -> SyncResult | None:
        """Resync when the interval has passed (the repair of any missed event)."""
        if time.monotonic() >= self._next_resync:
            return self.sync()
        return None

    def close(self) -> None:
        self.inotify.close()

    # ------------------------------------------------------------------ sync

    def sync(self) -> SyncResult:
        """Compare the plan with what runs and write the triggers that close the gap."""
        self.syncs += 1
        self._next_resync = time.monotonic() + self.resync_interval
        if self._plan_wd is None:
            self._watch_plan_dir()
        try:
            loaded = self._load()
        except PlanProblem as exc:
            message = str(exc)
            if message != self._last_error:
                # Once per distinct problem: a broken plan must not flood the log
                # every resync. What runs keeps running.
                self.log("plan unusable", file=exc.file, reason=exc.reason, node=self.node)
                self._last_error = message
            return SyncResult(error=message)
        if self._last_error is not None:
            self.log("plan usable again", lot=loaded.plan.lot, node=self.node)
            self._last_error = None
        try:
            return self._apply(loaded)
        except OSError as exc:
            # Disk full, permissions: what was written stays; the next sync retries.
            self.log("cannot write triggers", lot=loaded.plan.lot, reason=str(exc))
            return SyncResult(error=f"cannot write triggers: {exc}")

    def _load(self) -> LoadedPlan:
        proj = read_projection(self.plan_dir)
        digest = proj.digest
        if self._loaded is not None and self._loaded.digest == digest:
            return self._loaded
        plan_file = os.path.join(proj.source, PLAN_KEY)
        lot_file = os.path.join(proj.source, LOT_KEY)
        try:
            plan = parse_plan(json.loads(proj.plan_bytes.decode("utf-8")))
        except UnicodeDecodeError:
            raise PlanProblem(plan_file, "not UTF-8 text") from None
        except RecursionError:
            raise PlanProblem(plan_file, "JSON nested too deeply") from None
        except ValueError as exc:  # PlanError and JSONDecodeError are ValueErrors
            raise PlanProblem(plan_file, str(exc)) from None
        lot_name = _check_lot(proj.lot_bytes, lot_file)
        if lot_name != plan.lot:
            raise PlanProblem(lot_file, f"is lot {lot_name!r} but plan.json is for {plan.lot!r}")
        lot_path = os.path.join(self.lot_dir, f"{plan.lot}-{digest[:16]}.yaml")
        if not os.path.exists(lot_path):
            # The projected file vanishes at the next swap while mocks started
            # from it still run (and restart from it): keep our own copy.
            atomic_write(lot_path, proj.lot_bytes)
            self.log(
                "plan loaded",
                lot=plan.lot,
                generation=plan.generation,
                node=self.node,
                lot_copy=lot_path,
            )
        self._loaded = LoadedPlan(plan, lot_path, digest)
        self._collect_lot_copies(plan.lot, keep=lot_path)
        return self._loaded

    def _apply(self, loaded: LoadedPlan) -> SyncResult:
        plan = loaded.plan
        lot = plan.lot
        state = self._state(lot)
        desired = desired_devices(plan, self.node)
        running = indexes_of(lot, _names(self.dirs["pids"]))
        pending = indexes_of(
            lot,
            (
                n[: -len(START_SUFFIX)]
                for n in _names(self.dirs["start"])
                if n.endswith(START_SUFFIX)
            ),
        )
        stopping = indexes_of(lot, _names(self.dirs["stop"])) & (running | pending)
        settled = settled_devices(state.launched, desired, running, pending)
        to_start, to_stop = diff(desired, running, pending, stopping=stopping, settled=settled)
        result = SyncResult(desired=len(desired))
        tmp = os.path.join(self.root, "tmp")
        # Each batch made durable together: this runs on the tower's loop, and
        # two fsyncs per trigger held it for seconds with a lot of thousands.
        atomic_write_many(
            [(os.path.join(self.dirs["stop"], plan_mock_id(lot, index)), b"") for index in to_stop],
            tmp,
        )
        result.stopped.extend(to_stop)
        starts = []
        for index in to_start:
            mock_id = plan_mock_id(lot, index)
            req = StartRequest(mock_id, loaded.lot_path, index)
            data = (json.dumps(req.to_json(), sort_keys=True) + "\n").encode()
            starts.append((os.path.join(self.dirs["start"], mock_id + START_SUFFIX), data))
        atomic_write_many(starts, tmp)
        result.started.extend(to_start)
        self._awaiting_exit = {plan_mock_id(lot, i) for i in desired & stopping}
        launched = next_launched(state.launched, desired, running, pending, stopping, to_start)
        upgrade = self._upgrade(plan, state)
        if upgrade is not None:
            result.upgrade = upgrade
        if launched != state.launched or upgrade is not None:
            state.launched = launched
            self._save_state(lot, state)
        if result.started or result.stopped or result.upgrade:
            self.log(
                "plan applied",
                lot=lot,
                node=self.node,
                generation=plan.generation,
                desired=len(desired),
                started=to_ranges(result.started),
                stopped=to_ranges(result.stopped),
                upgrade=result.upgrade,
            )
        return result

    def _upgrade(self, plan: Plan, state: _LotState) -> str | None:
        """Write the upgrade trigger for a requested version the tower does not run.

        Inside a tower (``tower_version`` known) it is asked once per version in
        this process's life: a failed upgrade is not retried in a loop, but a
        tower whose container restarted (the image's version again, the state
        directory kept) asks again. Without a tower to ask, the ledger in the
        state directory says whether it was asked before.
        """
        req = plan.upgrade
        if req is None:
            return None
        running = self.tower_version() if self.tower_version else None
        if running == req.version:
            state.upgrade_requested = req.version
            return None
        if self.tower_version is not None:
            asked_before = req.version in self._asked
        else:
            asked_before = state.upgrade_requested == req.version
        if asked_before:
            return None
        self._asked.add(req.version)
        path = os.path.join(self.root, "upgrade")
        with contextlib.suppress(TriggerError):
            if parse_upgrade(read_trigger_bytes(path)) == req:
                state.upgrade_requested = req.version
                return None  # already waiting for the tower
        write_upgrade(self.root, req.version, req.source, req.sha256, req.endpoint_url)
        state.upgrade_requested = req.version
        return req.version

    # ------------------------------------------------------------------ state

    def _state(self, lot: str) -> _LotState:
        state = self._states.get(lot)
        if state is None:
            state = self._read_state(lot)
            self._states[lot] = state
        return state

    def _state_path(self, lot: str) -> str:
        return os.path.join(self.state_dir, lot + ".json")

    def _read_state(self, lot: str) -> _LotState:
        path = self._state_path(lot)
        try:
            with open(path, "rb") as f:
                obj = json.loads(f.read(MAX_PLAN_BYTES))
            launched = from_ranges(obj["launched"])
            upgrade = obj.get("upgrade_requested")
            if upgrade is not None and not isinstance(upgrade, str):
                raise PlanError("upgrade_requested must be a string")
            return _LotState(launched, upgrade)
        except FileNotFoundError:
            return _LotState()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Losing the ledger only means finished devices may be started once more.
            self.log("state file unusable, starting afresh", file=path, reason=str(exc))
            return _LotState()

    def _save_state(self, lot: str, state: _LotState) -> None:
        obj = {
            "lot": lot,
            "node": self.node,
            "launched": to_ranges(state.launched),
            "upgrade_requested": state.upgrade_requested,
        }
        atomic_write(self._state_path(lot), (json.dumps(obj) + "\n").encode(), sync_dir=False)

    # ------------------------------------------------------------------ housekeeping

    def _watch_plan_dir(self) -> None:
        mask = IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_CLOSE_WRITE | IN_ONLYDIR
        try:
            self._plan_wd = self.inotify.add_watch(self.plan_dir, mask)
        except OSError as exc:
            self._plan_wd = None
            self.log("cannot watch the plan directory", file=self.plan_dir, reason=str(exc))

    def _collect_lot_copies(self, lot: str, keep: str) -> None:
        """Delete copies of this lot no mock, start trigger or current plan refers to."""
        prefix = lot + "-"
        copies = {
            os.path.join(self.lot_dir, n)
            for n in _names(self.lot_dir)
            if n.startswith(prefix) and n.endswith(".yaml")
        }
        copies.discard(keep)
        if not copies:
            return
        used = self._referenced_lot_paths(lot)
        for path in copies - used:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _referenced_lot_paths(self, lot: str) -> set[str]:
        used: set[str] = set()
        for kind in ("pids", "start"):
            for name in _names(self.dirs[kind]):
                mock_id = name[: -len(START_SUFFIX)] if kind == "start" else name
                if not indexes_of(lot, [mock_id]):
                    continue
                try:
                    with open(os.path.join(self.dirs[kind], name), "rb") as f:
                        obj = json.loads(f.read(64 * 1024))
                    used.add(os.path.normpath(str(obj["lot"])))
                except (OSError, ValueError, KeyError, TypeError):
                    continue
        return used


def _check_lot(data: bytes, source: str) -> str:
    """Validate the lot manifest; return its name or raise PlanProblem."""
    from mockfleet.mock.lot import LotError, parse_lot

    try:
        docs = [d for d in yaml.safe_load_all(data.decode("utf-8")) if d is not None]
    except UnicodeDecodeError:
        raise PlanProblem(source, "not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise PlanProblem(source, f"not valid YAML: {exc}") from None
    if len(docs) != 1:
        raise PlanProblem(source, f"expected exactly one YAML document, found {len(docs)}")
    try:
        return parse_lot(docs[0], source).name
    except LotError as exc:
        raise PlanProblem(source, "invalid lot: " + "; ".join(exc.problems)) from None


def _names(directory: str) -> list[str]:
    """Entries of a trigger directory, without writers' in-progress temporaries."""
    try:
        return [n for n in os.listdir(directory) if not n.startswith(".")]
    except FileNotFoundError:
        return []


# --------------------------------------------------------------------------- standalone


def serve(watcher: PlanWatcher, should_stop: Callable[[], bool] | None = None) -> int:
    """Run ``watcher`` in its own selector loop until SIGTERM/SIGINT (the sidecar mode)."""
    stop_requested = False

    def on_signal(_signum: int, _frame: Any) -> None:
        nonlocal stop_requested
        stop_requested = True

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    old_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    sel = selectors.DefaultSelector()
    sel.register(wake_r, selectors.EVENT_READ, None)
    sel.register(watcher.fileno(), selectors.EVENT_READ, watcher.on_readable)
    try:
        watcher.sync()
        while not stop_requested and not (should_stop and should_stop()):
            for key, _ in sel.select(watcher.seconds_until_resync()):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                else:
                    key.data()
            watcher.poll()
    finally:
        sel.close()
        signal.set_wakeup_fd(old_fd)
        for s, handler in old.items():
            signal.signal(s, handler)
        os.close(wake_r)
        os.close(wake_w)
    return 0
