"""The tower: one single-threaded supervisor of thousands of mocks.

Everything happens in one selector loop: inotify events on the trigger
directories, zygote replies, SIGCHLD (through ``signal.set_wakeup_fd``),
pidfds of adopted mocks that are not our children, the optional HTTP
endpoint, and timers (stop grace periods, restarts, start pacing). All state
that must survive a crash or a re-exec lives in files: start triggers are the
queue (restarts are start triggers with ``not_before``), PID files the table
of running mocks, stop triggers the pending stops.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import random
import selectors
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mockfleet.tower import keeper, policy, priority
from mockfleet.tower.durable import Syncer
from mockfleet.tower.events import EventLog, log
from mockfleet.tower.linux import (
    IN_CLOSE_WRITE,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    OOM_SCORE_ADJ_MAX,
    Inotify,
    boot_id,
    oom_score_adj,
    proc_stat,
    set_child_subreaper,
)
from mockfleet.tower.oomkills import OomKills
from mockfleet.tower.pidfiles import (
    PidRecord,
    check_identity,
    pid_record_from,
    read_pid_file,
    reaped_after_start,
    write_pid_file,
)
from mockfleet.tower.trash import Trash
from mockfleet.tower.triggers import (
    START_SUFFIX,
    StartRequest,
    TriggerError,
    atomic_write,
    check_mock_id,
    ensure_dirs,
    parse_start,
    parse_upgrade,
    read_trigger_bytes,
    sanitize_name,
    start_name_to_id,
)
from mockfleet.tower.zygote_client import ZygoteClient

DEFAULT_DEVICE = "mockfleet.mock.runtime:run_device"
#: How much likelier than the tower a mock is to be the kernel's OOM victim.
#: The kernel scores a process by its resident pages, shared ones included,
#: plus this adjustment: without it, the lot validator and the tower (the
#: largest processes) went first in a test, and supervision with them.
DEFAULT_MOCK_OOM_SCORE_ADJ = 500
#: What a tower hands to itself across an in-place upgrade (``ROOT/handover.json``).
HANDOVER = "handover.json"


#: Seconds before a start that failed for a passing reason (a fork) is tried again.
RETRY_START_AFTER = 1.0
#: Unknown children's exits kept at most (see ``early_exits``), and for how long
#: (seconds) once there are that many.
EARLY_EXITS_MAX = 1000
EARLY_EXIT_KEEP = 60.0
#: Clock ticks per second of /proc/PID/stat's start times.
CLOCK_HZ = os.sysconf("SC_CLK_TCK")


def mock_oom_score_adj(offset: int, own: int | None = None) -> int | None:
    """The oom_score_adj each mock sets: the tower's own plus ``offset``,
    capped at the kernel's maximum; None when that changes nothing (a
    Kubernetes BestEffort pod already runs everything at the maximum)."""
    base = oom_score_adj() if own is None else own
    target = min(OOM_SCORE_ADJ_MAX, base + offset)
    return target if target > base else None


def running_version() -> str:
    env = os.environ.get("MOCKFLEET_TOWER_VERSION")
    if env:
        return env
    try:
        from importlib.metadata import version

        return version("mockfleet")
    except Exception:
        return "0+unknown"


@dataclass
class TowerConfig:
    root: str
    max_start_rate: float | None = None
    stop_grace: float = 10.0
    http: tuple[str, int] | None = None
    run_as: str | None = None
    rlimit_as: int | None = None
    rlimit_nofile: int | None = None
    #: added to the tower's own oom_score_adj for every mock (capped at 1000):
    #: under memory pressure the kernel then kills mocks, not the supervisor
    mock_oom_score_adj: int = DEFAULT_MOCK_OOM_SCORE_ADJ
    device: str = DEFAULT_DEVICE
    max_mocks: int = 32768
    max_inflight: int = 64
    #: ``auto``, ``idle`` or ``normal``: see mockfleet.tower.priority
    start_priority: str = "auto"
    #: a keeper process per mock, so its death is reported before its memory
    #: is torn down: see mockfleet.tower.keeper
    exit_keepers: bool = True
    restart_overrides: dict[str, Any] = field(default_factory=dict)
    events_stderr: bool = False
    #: Kubernetes: a mounted plan ConfigMap turned into triggers for ``node``
    plan: str | None = None
    node: str | None = None

    def to_argv(self) -> list[str]:
        """Command-line arguments that recreate this configuration (re-exec)."""
        argv = ["--root", self.root, "--stop-grace", repr(self.stop_grace)]
        if self.max_start_rate is not None:
            argv += ["--max-start-rate", repr(self.max_start_rate)]
        if self.http is not None:
            argv += ["--http", f"{self.http[0]}:{self.http[1]}"]
        if self.run_as:
            argv += ["--run-as", self.run_as]
        if self.rlimit_as:
            argv += ["--rlimit-as", str(self.rlimit_as)]
        if self.rlimit_nofile:
            argv += ["--rlimit-nofile", str(self.rlimit_nofile)]
        if self.mock_oom_score_adj != DEFAULT_MOCK_OOM_SCORE_ADJ:
            argv += ["--mock-oom-score-adj", str(self.mock_oom_score_adj)]
        if self.device != DEFAULT_DEVICE:
            argv += ["--device", self.device]
        argv += ["--max-mocks", str(self.max_mocks)]
        if self.start_priority != "auto":
            argv += ["--start-priority", self.start_priority]
        if not self.exit_keepers:
            argv += ["--no-exit-keepers"]
        flags = {
            "policy": "--restart-policy",
            "maxRestarts": "--restart-max",
            "backoff": "--restart-backoff",
            "maxBackoff": "--restart-max-backoff",
            "resetAfter": "--restart-reset-after",
        }
        for key, value in self.restart_overrides.items():
            argv += [flags[key], str(value)]
        if self.events_stderr:
            argv.append("--events-stderr")
        if self.plan:
            argv += ["--plan", self.plan]
        if self.node:
            argv += ["--node", self.node]
        return argv


@dataclass(eq=False)
class Mock:
    id: str
    lot: str
    index: int
    slot: int
    restarts: int = 0
    state: str = "starting"  # starting | running | stopping
    pid: int = 0
    start_ticks: int = -1
    lot_name: str = ""
    restart: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0
    started_mono: float = 0.0
    version: str = ""
    child: bool = True
    pidfd: int | None = None
    gate_fd: int | None = None
    stop_requested: bool = False
    force_killed: bool = False
    stop_deadline_armed: bool = False
    #: started at idle CPU priority (see mockfleet.tower.priority)
    idle: bool = False


class Tower:
    def __init__(self, cfg: TowerConfig) -> None:
        self.cfg = cfg
        self.root = os.path.abspath(cfg.root)
        self.dirs = {name: os.path.join(self.root, name) for name in ("start", "stop", "pids")}
        self.tmp = os.path.join(self.root, "tmp")
        self.rejected = os.path.join(self.root, "rejected")
        self.version = running_version()
        self.boot = boot_id()
        self.me = os.getpid()
        self.rng = random.Random()
        self.mocks: dict[str, Mock] = {}
        self.by_pid: dict[int, Mock] = {}
        self.pending: dict[str, None] = {}  # start trigger ids waiting, in arrival order
        self.deferred: set[str] = set()  # ids waiting for their not_before
        self.inflight: dict[str, Mock] = {}
        self.to_commit: list[Mock] = []
        #: running mocks whose PID file is not yet durable: id -> (sync ticket, mock);
        #: their start triggers are deleted once it is
        self.syncing: dict[str, tuple[int, Mock]] = {}
        #: exits of children not known yet (a mock whose zygote reply is still
        #: on its way): pid -> (wait status, reaped at, CLOCK_BOOTTIME seconds)
        self.early_exits: dict[int, tuple[int, float]] = {}
        self.free_slots = list(range(cfg.max_mocks - 1, -1, -1))
        self.used_slots: set[int] = set()
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.lot_totals: dict[str, dict[str, int]] = {}
        #: lot -> exit reason -> count, for the lot's status
        self.lot_exits: dict[str, dict[str, int]] = {}
        self.exit_counts: dict[str, int] = {}
        #: lot -> mocks the kernel's OOM killer took (a part of their "crashed")
        self.oom_killed: dict[str, int] = {}
        self.oom_kills = OomKills.of_this_process()
        self.shutting_down = False
        self.shutdown_deadline = 0.0
        self.killed_stragglers = False
        self.upgrade_to: tuple[str, str] | None = None
        self.need_rescan = False
        self.signals: set[int] = set()
        self.started_mono = time.monotonic()
        self.no_children = False
        self.bucket = policy.TokenBucket(cfg.max_start_rate, now=time.monotonic())
        self.pacing_timer = False
        self.http: Any = None
        self.planwatch: Any = None
        self.zygote_failures = 0
        self.zygote_was_ready = False
        self.zygote_respawning = False
        #: mock id -> record, from the handover of the process this one replaced
        #: (in-place upgrade): mocks that are our own children, known to be ours
        self.handed_over: dict[str, PidRecord] = {}
        #: can this process bring a mock back from idle priority, and does it
        #: start mocks idle while others wait (see mockfleet.tower.priority)
        self.can_restore = priority.tower_can_restore(priority.MOCK_NICE)
        self.start_idle, self.start_idle_why = priority.resolve(
            cfg.start_priority, self.can_restore
        )
        #: pid -> when it started, of mocks still at idle priority (oldest first)
        self.idle_since: dict[int, float] = {}
        stat = proc_stat(self.me)
        #: our own start time: it survives execve and tells our handover from a
        #: stale one left by an earlier process that had the same PID
        self.me_ticks = stat.start_ticks if stat is not None else -1

    # ------------------------------------------------------------------ set-up

    def setup(self) -> None:
        ensure_dirs(self.root)
        for sub in ("start", "stop", "pids", "rejected", "tmp", "versions"):
            os.chmod(os.path.join(self.root, sub), 0o700)
        os.chmod(self.root, 0o700)
        if self.cfg.run_as:
            import pwd

            pw = pwd.getpwnam(self.cfg.run_as)
            # Devices acknowledge a stop by deleting their stop file.
            os.chown(self.dirs["stop"], pw.pw_uid, pw.pw_gid)
            os.chmod(self.root, 0o711)  # traverse only: reach stop/, list nothing
        set_child_subreaper()
        from mockfleet.mock.counters import CounterFile

        counters_path = os.path.join(self.root, "counters.bin")
        self.counters = CounterFile(counters_path, self.cfg.max_mocks, create=True)
        self.events = EventLog(os.path.join(self.root, "events.jsonl"), self.cfg.events_stderr)
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.sel.register(self.wake_r, selectors.EVENT_READ, self._on_wakeup)
        self.syncer = Syncer()
        self.sel.register(self.syncer.fileno(), selectors.EVENT_READ, self._on_synced)
        self.trash = Trash(self.root)
        self.inotify = Inotify()
        mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR
        self.wd_start = self.inotify.add_watch(self.dirs["start"], mask)
        self.wd_stop = self.inotify.add_watch(self.dirs["stop"], mask)
        self.wd_root = self.inotify.add_watch(self.root, mask)
        self.sel.register(self.inotify.fileno(), selectors.EVENT_READ, self._on_inotify)
        zcfg = {
            "root": self.root,
            "counters": counters_path,
            "slots": self.cfg.max_mocks,
            "device": self.cfg.device,
            "run_as": self.cfg.run_as,
            "rlimit_as": self.cfg.rlimit_as,
            "rlimit_nofile": self.cfg.rlimit_nofile,
            "oom_score_adj": mock_oom_score_adj(self.cfg.mock_oom_score_adj),
            "keepers": self.cfg.exit_keepers and keeper.supported(),
        }
        # spawned by run() after the first rescan: adopting the running mocks
        # (an in-place upgrade) comes first, without a preloading zygote beside it
        self.zygote = ZygoteClient(zcfg)
        if self.cfg.http is not None:
            from mockfleet.tower.httpserver import HttpServer
            from mockfleet.tower.status import StatusPages

            pages = StatusPages(self)
            self.http = HttpServer(self.cfg.http[0], self.cfg.http[1], pages.handle, self.sel)
        if self.cfg.plan is not None:
            # same code path as a VM: the plan only writes start/stop/upgrade triggers
            from mockfleet.tower.planwatch import PlanWatcher

            node = self.cfg.node or os.environ.get("NODE_NAME", "")
            self.planwatch = PlanWatcher(
                self.cfg.plan, self.root, node, tower_version=lambda: self.version
            )
            self.sel.register(
                self.planwatch.fileno(), selectors.EVENT_READ, self.planwatch.on_readable
            )
        previous = os.environ.pop("MOCKFLEET_TOWER_PREVIOUS", None)
        exec_at = os.environ.pop("MOCKFLEET_TOWER_EXEC_AT", None)
        self._take_handover()
        self.events.emit(
            "tower-started",
            pid=self.me,
            version=self.version,
            previous_version=previous,
            # after an in-place upgrade: how long the new code took to start
            since_exec_s=_since(exec_at),
            setup_s=round(time.monotonic() - self.started_mono, 3),
            code=os.path.dirname(os.path.abspath(__file__)),
            http=self.http.address if self.http else None,
            start_priority="idle" if self.start_idle else "normal",
            start_priority_why=self.start_idle_why,
        )
        log("tower started", root=self.root, version=self.version, pid=self.me)

    def _spawn_zygote(self) -> None:
        self.zygote_was_ready = False
        self.zygote.spawn()
        self.sel.register(self.zygote.fileno(), selectors.EVENT_READ, self._on_zygote)

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        self.setup()
        self.rescan(startup=True)
        self._spawn_zygote()
        if self.planwatch is not None:
            self.planwatch.sync()
        while True:
            timeout = self._next_timeout()
            for key, _mask in self.sel.select(timeout):
                key.data()
            self._step()
            if self.shutting_down and self._shutdown_complete():
                break
            if self.upgrade_to is not None and not self.inflight:
                if self.zygote.pid and self.zygote.sock is not None:
                    self._let_zygote_go()
                if not self.zygote.pid and not self.to_commit and not self.syncing:
                    self._exec_upgrade()
        self._final_cleanup()
        return 0

    def _step(self) -> None:
        if self.signals:
            sigs, self.signals = self.signals, set()
            if (signal.SIGTERM in sigs or signal.SIGINT in sigs) and not self.shutting_down:
                self.begin_shutdown()
            if signal.SIGHUP in sigs:
                self.need_rescan = True
        self.reap()
        if self.need_rescan:
            self.need_rescan = False
            self.rescan(startup=False)
        self._run_timers()
        if self.planwatch is not None and not self.shutting_down:
            self.planwatch.poll()
        self.dispatch_starts()
        self.commit_starts()
        self.restore_priorities()
        self.reap()
        self.events.flush()

    def _next_timeout(self) -> float | None:
        if self.to_commit or self.need_rescan or self.signals:
            return 0.0
        if (
            self.pending
            and self.zygote.ready
            and not self.pacing_timer
            and len(self.inflight) < self.cfg.max_inflight
            and not self.shutting_down
        ):
            return 0.0
        timeout = None
        if self.timers:
            timeout = max(0.0, self.timers[0][0] - time.monotonic())
        if self.idle_since:
            due = next(iter(self.idle_since.values())) + priority.IDLE_START_MAX
            wait = max(0.0, due - time.monotonic())
            timeout = wait if timeout is None else min(timeout, wait)
        if self.planwatch is not None and not self.shutting_down:
            resync = self.planwatch.seconds_until_resync()
            timeout = resync if timeout is None else min(timeout, resync)
        return timeout

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.signals.add(signum)

    def _on_wakeup(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_r, 4096):
                pass

    def at(self, delay: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self._seq, fn))

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, fn = heapq.heappop(self.timers)
            fn()

    # ------------------------------------------------------------------ triggers

    def _on_inotify(self) -> None:
        for ev in self.inotify.read():
            if ev.mask & IN_Q_OVERFLOW:
                self.events.emit("inotify-overflow")
                self.need_rescan = True
                continue
            if not ev.name or ev.name.startswith("."):
                continue  # in-progress temporaries of writers that rename into place
            if ev.wd == self.wd_start:
                self.on_start_name(ev.name)
            elif ev.wd == self.wd_stop:
                self.on_stop_name(ev.name)
            elif ev.wd == self.wd_root and ev.name == "upgrade":
                self.on_upgrade()

    def reject(self, kind: str, name: str, reason: str) -> None:
        """Move a bad trigger to rejected/ with a .reason file; never raises."""
        src = (
            os.path.join(self.root, kind, name)
            if kind != "upgrade"
            else os.path.join(self.root, "upgrade")
        )
        dest_name = f"{kind}.{sanitize_name(name)}.{time.time_ns()}"
        dest = os.path.join(self.rejected, dest_name)
        try:
            os.rename(src, dest)
        except FileNotFoundError:
            return
        except OSError as exc:
            self.events.emit("reject-failed", trigger=f"{kind}/{name!r}", reason=str(exc))
            with contextlib.suppress(OSError):
                os.unlink(src)
            return
        info = {"trigger": f"{kind}/{name}", "reason": reason, "ts": time.time()}
        with contextlib.suppress(OSError):
            atomic_write(dest + ".reason", (json.dumps(info) + "\n").encode(), self.tmp, False)
        self.events.emit("rejected", trigger=f"{kind}/{name}", moved_to=dest_name, reason=reason)

    def on_start_name(self, name: str) -> None:
        try:
            mock_id = start_name_to_id(name)
        except TriggerError as exc:
            self.reject("start", name, str(exc))
            return
        if mock_id not in self.pending and mock_id not in self.deferred:
            self.pending[mock_id] = None

    def _start_path(self, mock_id: str) -> str:
        return os.path.join(self.dirs["start"], mock_id + START_SUFFIX)

    def dispatch_starts(self) -> None:
        if self.shutting_down or self.upgrade_to is not None:
            return
        if not self.zygote.ready:
            return
        now_mono = time.monotonic()
        while self.pending and len(self.inflight) < self.cfg.max_inflight:
            mock_id = next(iter(self.pending))
            if mock_id in self.mocks:
                del self.pending[mock_id]
                if mock_id not in self.syncing:  # else deleted once its PID file is durable
                    self._unlink(self._start_path(mock_id))
                self.events.emit("start-ignored", mock=mock_id, reason="already running")
                continue
            if not self.bucket.ready(now_mono):
                if not self.pacing_timer:
                    self.pacing_timer = True
                    self.at(self.bucket.wait_time(), self._pacing_done)
                return
            name = mock_id + START_SUFFIX
            try:
                req = parse_start(mock_id, read_trigger_bytes(self._start_path(mock_id)), self.root)
            except TriggerError as exc:
                del self.pending[mock_id]
                if os.path.lexists(self._start_path(mock_id)):
                    self.reject("start", name, str(exc))
                continue
            wait = req.not_before - time.time()
            if wait > 0:
                del self.pending[mock_id]
                self._defer(mock_id, wait)
                continue
            slot = self._take_slot()
            if slot is None:
                self.events.emit("capacity", mock=mock_id, max_mocks=self.cfg.max_mocks)
                return
            request = {
                "op": "start",
                "id": mock_id,
                "lot": req.lot,
                "index": req.index,
                "slot": slot,
            }
            # Idle only in an unpaced burst (others waiting): a lone or paced
            # start has no pipeline to keep clear, and would only cost a restore.
            idle = (
                self.start_idle
                and self.cfg.max_start_rate is None
                and (len(self.pending) > 1 or bool(self.inflight))
            )
            if idle:
                request["idle"] = True
            if not self.zygote.send(request):
                self.free_slots.append(slot)  # not in used_slots yet: simply put back
                return
            self.bucket.consume()
            del self.pending[mock_id]
            self.used_slots.add(slot)
            m = Mock(mock_id, req.lot, req.index, slot, restarts=req.restarts, idle=idle)
            self.mocks[mock_id] = m
            self.inflight[mock_id] = m

    def _pacing_done(self) -> None:
        self.pacing_timer = False

    def _defer(self, mock_id: str, delay: float) -> None:
        """Leave a start trigger alone for ``delay`` seconds, then take it up again."""
        self.deferred.add(mock_id)
        self.at(delay, lambda: self._undefer(mock_id))

    def _undefer(self, mock_id: str) -> None:
        self.deferred.discard(mock_id)
        if os.path.lexists(self._start_path(mock_id)):
            self.pending[mock_id] = None

    def _on_zygote(self) -> None:
        replies = self.zygote.receive()
        for reply, fd in replies or []:
            self._on_reply(reply, fd)
        if replies is None:
            # Closed: the zygote died. Reaping it restarts it.
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(self.zygote.fileno())
            self.zygote.close()
            self._requeue_inflight()

    def _requeue_inflight(self) -> None:
        for mock_id, m in list(self.inflight.items()):
            self._release(m)
            self.pending[mock_id] = None
        self.inflight.clear()

    def _on_reply(self, reply: dict[str, Any], fd: int | None) -> None:
        if reply.get("op") == "ready":
            self.zygote.ready = True
            self.zygote_was_ready = True
            self.events.emit(
                "zygote-ready",
                pid=reply.get("pid"),
                immortal_objects=reply.get("immortal_objects", 0),
                immortal_ms=reply.get("immortal_ms", 0.0),
                immortal_off=reply.get("immortal_off"),
                forking=reply.get("forking"),
            )
            return
        mock_id = reply.get("id", "")
        m = self.inflight.pop(mock_id, None)
        if m is None:
            if fd is not None:
                os.close(fd)
            return
        if not reply.get("ok"):
            self._release(m)
            if reply.get("permanent"):
                self.events.emit(
                    "start-failed", mock=mock_id, lot=m.lot, index=m.index, reason=reply["error"]
                )
                self.reject("start", mock_id + START_SUFFIX, str(reply.get("error")))
            else:
                # Transient (a failed fork): try again in a moment, not at once,
                # so a machine out of processes is not hammered in a loop.
                self.events.emit(
                    "start-retry", mock=mock_id, reason=reply.get("error"), after=RETRY_START_AFTER
                )
                self._defer(mock_id, RETRY_START_AFTER)
            return
        m.pid = int(reply["pid"])
        m.start_ticks = int(reply["start_ticks"])
        m.lot_name = str(reply.get("lot_name", ""))
        m.restart = {**reply.get("restart", {}), **self.cfg.restart_overrides}
        m.gate_fd = fd
        m.version = self.version
        self.by_pid[m.pid] = m
        if self.shutting_down:
            # Not committed: closing the gate without a PID file makes it exit.
            self._close_gate(m)
            self._release(m)
            self.pending[mock_id] = None
            return
        self.to_commit.append(m)

    def _close_gate(self, m: Mock) -> None:
        if m.gate_fd is not None:
            os.close(m.gate_fd)
            m.gate_fd = None

    def _release(self, m: Mock) -> None:
        """Forget a mock that never became running."""
        self.mocks.pop(m.id, None)
        if m.pid:
            self.by_pid.pop(m.pid, None)
        self._free_slot(m.slot)

    def _take_slot(self) -> int | None:
        """A free counter slot, or None at capacity. Adopted mocks' slots are
        only marked used (a list remove per adoption is O(n)), so skip them."""
        while self.free_slots:
            slot = self.free_slots.pop()
            if slot not in self.used_slots:
                return slot
        return None

    def _free_slot(self, slot: int) -> None:
        if slot in self.used_slots:
            self.used_slots.discard(slot)
            self.free_slots.append(slot)

    def commit_starts(self) -> None:
        """Publish a batch of PID files and let the mocks run; their triggers go
        once the files are durable (``_on_synced``). A tower crash at any point
        neither loses nor doubles a start: a mock runs only if its PID file
        names it, and the next tower adopts it from that file."""
        if not self.to_commit:
            return
        batch, self.to_commit = self.to_commit, []
        now = time.time()
        mono = time.monotonic()
        written = []
        paths = []
        for m in batch:
            m.started_at = now
            m.started_mono = mono
            rec = self._record(m)
            try:
                paths.append(
                    write_pid_file(
                        self.dirs["pids"],
                        self.tmp,
                        rec,
                        sync_dir=False,
                        durable=False,
                        recycle=self.trash.refill,
                    )
                )
            except OSError as exc:
                self.events.emit("pidfile-failed", mock=m.id, reason=str(exc))
                self._close_gate(m)  # uncommitted: it exits by itself
                self._release(m)
                self.pending[m.id] = None
                continue
            written.append(m)
        ticket = self.syncer.submit(paths, self.dirs["pids"]) if paths else 0
        for m in written:
            self._close_gate(m)
            if m.idle:
                self.idle_since[m.pid] = mono
            self.syncing[m.id] = (ticket, m)
            m.state = "running"
            self.events.emit(
                "started",
                mock=m.id,
                lot=m.lot_name,
                index=m.index,
                pid=m.pid,
                slot=m.slot,
                restarts=m.restarts,
                version=m.version,
                idle=m.idle,
            )
            early = self.early_exits.pop(m.pid, None)
            if early is not None and reaped_after_start(early[1], m.start_ticks, CLOCK_HZ):
                self.on_exit(m, early[0])
            elif m.stop_requested:
                self._signal(m, signal.SIGTERM)
                self._arm_stop_deadline(m)

    def restore_priorities(self, everyone: bool = False) -> None:
        """Bring mocks that started at idle priority back to normal: all of
        them once no start is waiting (or ``everyone``), else those idle for
        ``IDLE_START_MAX``."""
        if not self.idle_since:
            return
        burst_over = everyone or not (self.pending or self.inflight or self.to_commit)
        if burst_over:
            due = list(self.idle_since)
            self.idle_since.clear()
        else:
            cutoff = time.monotonic() - priority.IDLE_START_MAX
            due = []
            for pid, since in self.idle_since.items():
                if since > cutoff:
                    break
                due.append(pid)
            for pid in due:
                del self.idle_since[pid]
        try:
            for pid in due:
                priority.restore(pid)
        except OSError as exc:
            # Checked at start-up (CAP_SYS_NICE or RLIMIT_NICE), so something
            # else refused: a security module, a changed limit. Start no more
            # mocks idle, and say which stay that way.
            self.start_idle = False
            stuck = [self.by_pid[pid].id for pid in due if pid in self.by_pid]
            self.events.emit(
                "priority-restore-failed",
                reason=str(exc),
                mocks=len(stuck),
                first=stuck[:10],
                hint="these mocks stay at idle CPU priority until they restart; "
                "run the tower with --start-priority normal",
            )
            return
        if burst_over:  # not each mock of a long (paced) burst: one line per burst
            self.events.emit("priority-restored", mocks=len(due))

    def _on_synced(self) -> None:
        """PID files became durable: now their start triggers may go."""
        done, errors = self.syncer.done()
        ready = [mid for mid, (ticket, _m) in self.syncing.items() if ticket <= done]
        if errors:
            # Keep the triggers and try again: a trigger is only deleted once
            # its PID file is on disk.
            self.events.emit("pidfile-failed", reason="fsync: " + "; ".join(errors[:3]))
            for mock_id in ready:
                self.syncing[mock_id] = (sys.maxsize, self.syncing[mock_id][1])
            self.at(1.0, lambda: self._resync(ready))
            return
        for mock_id in ready:
            del self.syncing[mock_id]
            self._unlink(self._start_path(mock_id))

    def _resync(self, ids: list[str]) -> None:
        ids = [mid for mid in ids if mid in self.syncing]
        if ids:
            ticket = self.syncer.submit(
                [os.path.join(self.dirs["pids"], mid) for mid in ids], self.dirs["pids"]
            )
            for mid in ids:
                self.syncing[mid] = (ticket, self.syncing[mid][1])

    def _record(self, m: Mock) -> PidRecord:
        return PidRecord(
            mock_id=m.id,
            pid=m.pid,
            start_ticks=m.start_ticks,
            boot_id=self.boot,
            lot=m.lot,
            lot_name=m.lot_name,
            index=m.index,
            slot=m.slot,
            restarts=m.restarts,
            started_at=m.started_at,
            version=m.version,
            restart=m.restart,
        )

    def _unlink(self, path: str) -> bool:
        # Never waits for the disk: see trash.py.
        return self.trash.delete(path)

    # ------------------------------------------------------------------ stops

    def on_stop_name(self, name: str) -> None:
        try:
            mock_id = check_mock_id(name)
        except TriggerError as exc:
            self.reject("stop", name, str(exc))
            return
        path = os.path.join(self.dirs["stop"], mock_id)
        m = self.mocks.get(mock_id)
        if not os.path.lexists(path):
            # Already consumed: the mock saw it first. It still was a stop.
            if m is not None:
                m.stop_requested = True
            return
        if m is None:
            if self._unlink(self._start_path(mock_id)):
                self.pending.pop(mock_id, None)
                self.deferred.discard(mock_id)
                self._unlink(path)
                self.events.emit("start-cancelled", mock=mock_id, reason="stop before start")
            else:
                self._unlink(path)
                self.events.emit("stop-unknown", mock=mock_id, reason="no such mock")
            return
        self.request_stop(m)

    def request_stop(self, m: Mock) -> None:
        if m.stop_requested and m.stop_deadline_armed:
            return
        m.stop_requested = True
        if m.state == "starting":
            return  # signalled once committed
        m.state = "stopping"
        self._signal(m, signal.SIGTERM)
        self._arm_stop_deadline(m)
        self.events.emit("stopping", mock=m.id, lot=m.lot_name, index=m.index, pid=m.pid)

    def _arm_stop_deadline(self, m: Mock) -> None:
        if m.stop_deadline_armed:
            return
        m.stop_deadline_armed = True
        pid = m.pid
        self.at(self.cfg.stop_grace, lambda: self._stop_deadline(m, pid, 1))

    def _stop_deadline(self, m: Mock, pid: int, round_: int) -> None:
        if self.by_pid.get(pid) is not m:
            return  # already gone
        stop_path = os.path.join(self.dirs["stop"], m.id)
        if os.path.lexists(stop_path) or round_ > 1 or self.shutting_down:
            self.force_kill(m)
            self._unlink(stop_path)
        else:
            # It acknowledged the stop but is still shutting down: one more grace.
            self.at(self.cfg.stop_grace, lambda: self._stop_deadline(m, pid, round_ + 1))

    def force_kill(self, m: Mock) -> None:
        m.force_killed = True
        self.events.emit("force-kill", mock=m.id, lot=m.lot_name, index=m.index, pid=m.pid)
        self._signal(m, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(m.pid, signal.SIGKILL)

    def _signal(self, m: Mock, sig: int) -> None:
        try:
            if m.pidfd is not None:
                signal.pidfd_send_signal(m.pidfd, sig)
            else:
                os.kill(m.pid, sig)
        except (ProcessLookupError, PermissionError, OSError):
            pass

    # ------------------------------------------------------------------ exits

    def reap(self) -> None:
        # Stop triggers queued before an exit must be seen first: a mock that
        # consumed its stop file and exited 0 was stopped, not finished.
        self._on_inotify()
        while True:
            try:
                # Look before reaping: while a dead child is unreaped, its PID
                # (and so its process group's ID) cannot be anyone else's.
                dead = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                self.no_children = True
                return
            if dead is None:
                self.no_children = False
                return
            pid = dead.si_pid
            known = self.by_pid.get(pid)
            if known is not None and known.state != "starting":
                # Its keeper (see mockfleet.tower.keeper), and anything else the
                # device left in its group, end with it.
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
            try:
                pid, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if pid == 0:  # not reapable after all: the next SIGCHLD comes back here
                self.no_children = False
                return
            if pid == self.zygote.pid:
                self._on_zygote_exit(status)
                continue
            m = self.by_pid.get(pid)
            if m is None or m.state == "starting":
                now_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
                if len(self.early_exits) >= EARLY_EXITS_MAX:
                    # Not children of ours to come (orphans a device left, say):
                    # a start's reply comes within seconds, so drop the old ones.
                    cutoff = now_boot - EARLY_EXIT_KEEP
                    for old_pid, (_st, at) in list(self.early_exits.items()):
                        if at < cutoff:
                            del self.early_exits[old_pid]
                self.early_exits[pid] = (status, now_boot)
                continue
            if status == 0 and not m.stop_requested:
                # A clean exit may answer a stop file written after the read above
                # (the mock saw it first): its event is queued by now, read it.
                self._on_inotify()
            self.on_exit(m, status)

    def _on_zygote_exit(self, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(KeyError, ValueError):
            if self.zygote.sock is not None:
                self.sel.unregister(self.zygote.fileno())
        self.zygote.close()
        self.zygote.pid = 0
        self._requeue_inflight()
        if self.shutting_down or self.upgrade_to is not None:
            return
        if not self.zygote_was_ready:
            self.zygote_failures += 1
        else:
            self.zygote_failures = 0
        delay = 0.0 if not self.zygote_failures else min(30.0, 0.5 * 2**self.zygote_failures)
        self.events.emit(
            "zygote-exited",
            exit_code=code if code >= 0 else None,
            signal=-code if code < 0 else None,
            reason=f"restarting it in {delay:g}s"
            + (" (it died before it was ready: check --device and the logs)" if delay else ""),
        )
        self.zygote_respawning = True
        self.at(delay, self._respawn_zygote)

    def _respawn_zygote(self) -> None:
        self.zygote_respawning = False
        if not self.shutting_down and self.upgrade_to is None and not self.zygote.pid:
            self._spawn_zygote()

    def on_exit(self, m: Mock, status: int | None) -> None:
        """Record how a mock ended; schedule its restart when the policy says so."""
        code: int | None = None
        sig: int | None = None
        if status is not None:
            value = os.waitstatus_to_exitcode(status)
            if value < 0:
                sig = -value
            else:
                code = value
        if self.shutting_down:
            m.stop_requested = True
        reason = policy.exit_reason(code, sig, m.stop_requested, m.force_killed)
        self.mocks.pop(m.id, None)
        self.by_pid.pop(m.pid, None)
        self.idle_since.pop(m.pid, None)
        if m.pidfd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(m.pidfd)
            os.close(m.pidfd)
            m.pidfd = None
        self._close_gate(m)
        entry = self.syncing.get(m.id)
        if entry is not None and entry[1] is m:
            # It ran and its exit is recorded: the start is done with, durable or not.
            del self.syncing[m.id]
            self._unlink(self._start_path(m.id))
        if m.stop_requested:
            self._unlink(os.path.join(self.dirs["stop"], m.id))
        self._account_counters(m)
        exits = self.lot_exits.setdefault(m.lot_name or "?", {})
        exits[reason] = exits.get(reason, 0) + 1
        self._free_slot(m.slot)
        ran_for = time.monotonic() - m.started_mono if m.started_mono else 0.0
        decision: policy.RestartDecision | None = None
        if not self.shutting_down:
            decision = policy.decide_restart(m.restart, reason, code, m.restarts, ran_for, self.rng)
            if decision.restart:
                req = StartRequest(
                    m.id, m.lot, m.index, decision.restarts, time.time() + decision.delay
                )
                try:
                    data = (json.dumps(req.to_json()) + "\n").encode()
                    atomic_write(self._start_path(m.id), data, self.tmp, sync_dir=True)
                except OSError as exc:
                    decision = policy.RestartDecision(False, f"cannot write restart: {exc}")
        self._unlink(os.path.join(self.dirs["pids"], m.id))
        self.exit_counts[reason] = self.exit_counts.get(reason, 0) + 1
        # A SIGKILL nobody here sent: the OOM killer's, if its counter says so.
        oom = reason == policy.CRASHED and sig == signal.SIGKILL and self.oom_kills.claim()
        if oom:
            lot_name = m.lot_name or "?"
            self.oom_killed[lot_name] = self.oom_killed.get(lot_name, 0) + 1
        self.events.emit(
            "exited",
            mock=m.id,
            lot=m.lot_name,
            index=m.index,
            pid=m.pid,
            exit_code=code,
            signal=sig,
            reason=reason,
            ran_for=round(ran_for, 3),
            restart=decision.restart if decision else False,
            restart_in=round(decision.delay, 3) if decision and decision.restart else None,
            restart_why=decision.why if decision else "tower shutting down",
            **({"oom_killed": True} if oom else {}),
        )

    def _account_counters(self, m: Mock) -> None:
        if not 0 <= m.slot < self.cfg.max_mocks:
            return
        try:
            c = self.counters.read(m.slot)
        except RuntimeError:
            return
        if c.pid == m.pid:
            totals = self.lot_totals.setdefault(m.lot_name, {})
            for name in ("sent", "failed", "retried", "bytes", "dropped"):
                totals[name] = totals.get(name, 0) + getattr(c, name)
        self.counters.clear(m.slot)

    def _on_pidfd(self, m: Mock) -> None:
        if self.by_pid.get(m.pid) is m:
            self._end_group_of_dead(m)
            self.on_exit(m, None)

    def _end_group_of_dead(self, m: Mock) -> None:
        """Kill what is left in the process group of a dead mock that is not our
        child (its keeper: see mockfleet.tower.keeper). Not if its PID is now
        another process's: a group outlives its leader only while it has
        members, and a PID is reused only once nothing holds it."""
        stat = proc_stat(m.pid)
        if stat is not None and stat.start_ticks != m.start_ticks:
            return
        with contextlib.suppress(OSError):
            os.killpg(m.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ rescan

    def rescan(self, startup: bool) -> None:
        """Adopt live mocks from PID files, report dead ones as lost, then take
        every waiting trigger (start-up, inotify overflow, SIGHUP)."""
        self.events.emit("rescan", startup=startup)
        pids_dir = self.dirs["pids"]
        adopted: list[Mock] = []
        for name in sorted(os.listdir(pids_dir)):
            if name in self.mocks:
                continue
            path = os.path.join(pids_dir, name)
            handed = self.handed_over.pop(name, None)
            if handed is not None and handed.mock_id == name:
                self._adopt_or_bury(handed, our_child=True)
                continue
            try:
                check_mock_id(name)
                rec = read_pid_file(path)
                if rec.mock_id != name:
                    raise ValueError("the record names another mock")
            except FileNotFoundError:
                continue
            except (OSError, ValueError, TypeError) as exc:
                self._unlink(path)
                self.events.emit("pidfile-invalid", file=name, reason=str(exc))
                continue
            m = self._adopt_or_bury(rec)
            if m is not None:
                adopted.append(m)
        if adopted:
            # A crashed tower may have left them written but not yet durable: make
            # sure before any of their start triggers is deleted.
            ticket = self.syncer.submit([os.path.join(pids_dir, m.id) for m in adopted], pids_dir)
            for m in adopted:
                self.syncing[m.id] = (ticket, m)
        self.handed_over.clear()  # their PID files are gone: not ours to adopt
        if startup:
            self.reap()
        for name in sorted(os.listdir(self.dirs["start"])):
            if not name.startswith("."):
                self.on_start_name(name)
        for name in sorted(os.listdir(self.dirs["stop"])):
            if not name.startswith("."):
                self.on_stop_name(name)
        if os.path.lexists(os.path.join(self.root, "upgrade")):
            self.on_upgrade()

    def _adopt_or_bury(self, rec: PidRecord, our_child: bool = False) -> Mock | None:
        """The adopted mock, or None when it was reported lost.

        ``our_child``: the record comes from our own handover and names a child
        of this very process. An unreaped child's PID cannot be reused, and
        nothing has reaped since the handover was written, so the process
        needs no identity check (a /proc read per mock).
        """
        m = Mock(rec.mock_id, rec.lot, rec.index, rec.slot, restarts=rec.restarts)
        m.pid = rec.pid
        m.start_ticks = rec.start_ticks
        m.lot_name = rec.lot_name
        m.restart = {**rec.restart, **self.cfg.restart_overrides}
        m.started_at = rec.started_at
        m.started_mono = time.monotonic() - max(0.0, time.time() - rec.started_at)
        m.version = rec.version
        stat = None if our_child else check_identity(rec, self.boot)
        alive = our_child or stat is not None
        slot_ok = 0 <= rec.slot < self.cfg.max_mocks and rec.slot not in self.used_slots
        if stat is not None and slot_ok:
            m.child = stat.ppid == self.me
            if not m.child:
                try:
                    m.pidfd = os.pidfd_open(rec.pid)
                except ProcessLookupError:
                    stat = None
        if not alive or not slot_ok:
            m.state = "running"
            m.slot = -1
            if not alive:
                self._end_group_of_dead(m)  # died while no tower watched: its keeper
            self.on_exit(m, None)  # lost: how it ended is unknown
            return None
        m.state = "running"
        if not our_child and self.can_restore and priority.is_idle(rec.pid):
            # started idle by a tower that died mid-burst: due at once
            m.idle = True
            self.idle_since[rec.pid] = time.monotonic() - priority.IDLE_START_MAX
        self.used_slots.add(rec.slot)  # its stale entry in free_slots is skipped
        self.mocks[m.id] = m
        self.by_pid[m.pid] = m
        if m.pidfd is not None:
            self.sel.register(m.pidfd, selectors.EVENT_READ, lambda mm=m: self._on_pidfd(mm))
        self.events.emit(
            "adopted",
            mock=m.id,
            lot=m.lot_name,
            index=m.index,
            pid=m.pid,
            child=m.child,
            version=m.version,
            source="handover" if our_child else "pid-file",
        )
        return m

    # ------------------------------------------------------------------ upgrade

    def on_upgrade(self) -> None:
        path = os.path.join(self.root, "upgrade")
        if self.upgrade_to is not None:
            return
        try:
            req = parse_upgrade(read_trigger_bytes(path))
        except TriggerError as exc:
            if os.path.lexists(path):
                self.reject("upgrade", "upgrade", str(exc))
            return
        if req.version == self.version:
            self._unlink(path)
            self.events.emit("upgrade-complete", version=self.version, pid=self.me)
            return
        from mockfleet.tower.upgrade import UpgradeError, install

        self.events.emit("upgrade-fetching", version=req.version, source=req.source)
        self.events.flush()
        try:
            site = install(self.root, req)
        except UpgradeError as exc:
            self.events.emit("upgrade-failed", version=req.version, reason=str(exc))
            self.reject("upgrade", "upgrade", str(exc))
            return
        self.events.emit("upgrade-installed", version=req.version, path=site)
        self.upgrade_to = (req.version, site)

    def _write_handover(self) -> None:
        """Counters of ended mocks live in memory only: hand them to the tower
        this process becomes, so /status stays monotonic across an upgrade."""
        state = {
            "pid": self.me,
            "start_ticks": self.me_ticks,
            "boot_id": self.boot,
            "lot_totals": self.lot_totals,
            "lot_exits": self.lot_exits,
            "exit_counts": self.exit_counts,
            "oom_killed": self.oom_killed,
            # The table of running mocks, so the new incarnation need not read
            # and check thousands of PID files before it supervises them again.
            "mocks": [
                {**self._record(m).to_dict(), "child": m.child}
                for m in self.mocks.values()
                if m.pid and m.state in ("running", "stopping")
            ],
        }
        data = (json.dumps(state, separators=(",", ":")) + "\n").encode()
        # read back by this very process after execve: visible is enough
        atomic_write(os.path.join(self.root, HANDOVER), data, self.tmp, durable=False)

    def _take_handover(self) -> None:
        """Adopt the counters a previous incarnation of this process left
        (same PID, same boot); anything else is stale and dropped."""
        path = os.path.join(self.root, HANDOVER)
        try:
            with open(path, "rb") as f:
                state = json.loads(f.read(16 * 1024 * 1024))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            self._unlink(path)
            self.events.emit("handover-invalid", reason=str(exc))
            return
        self._unlink(path)
        if not isinstance(state, dict) or state.get("pid") != self.me:
            return
        if state.get("boot_id") != self.boot or state.get("start_ticks") != self.me_ticks:
            return
        self.handed_over = _handed_over(state.get("mocks"))
        try:
            self.lot_totals = _counts_by_name(state.get("lot_totals"))
            self.lot_exits = _counts_by_name(state.get("lot_exits"))
            self.exit_counts = _counts(state.get("exit_counts"))
            self.oom_killed = _counts(state.get("oom_killed") or {})
        except ValueError as exc:
            self.lot_totals, self.lot_exits, self.exit_counts = {}, {}, {}
            self.oom_killed = {}
            self.events.emit("handover-invalid", reason=str(exc))

    def _exec_upgrade(self) -> None:
        assert self.upgrade_to is not None
        version, site = self.upgrade_to
        self.events.emit(
            "upgrade-exec",
            version=version,
            previous_version=self.version,
            pid=self.me,
            mocks=len(self.mocks),
        )
        # the new code knows nothing of who started idle: bring them back now
        self.restore_priorities(everyone=True)
        self.events.flush()
        self._stop_zygote(timeout=5.0)
        self._write_handover()
        if self.http is not None and self.cfg.http is not None and self.cfg.http[1] == 0:
            # keep the port picked at start-up: clients polling /status find us again
            self.cfg.http = (self.cfg.http[0], int(self.http.address.rsplit(":", 1)[1]))
        env = dict(os.environ)
        old = env.get("MOCKFLEET_TOWER_BASE_PYTHONPATH", env.get("PYTHONPATH", ""))
        env["MOCKFLEET_TOWER_BASE_PYTHONPATH"] = old
        env["PYTHONPATH"] = site + (os.pathsep + old if old else "")
        env["MOCKFLEET_TOWER_VERSION"] = version
        env["MOCKFLEET_TOWER_PREVIOUS"] = self.version
        env["MOCKFLEET_TOWER_EXEC_AT"] = repr(time.time())
        signal.set_wakeup_fd(-1)
        argv = [sys.executable, "-m", "mockfleet.tower", *self.cfg.to_argv()]
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, argv, env)

    def _let_zygote_go(self) -> None:
        """Before an exec: close the zygote's socket so that it exits, while
        this loop goes on reaping and stopping mocks. The exec waits for its
        exit (seen by ``reap``), so the mocks go unsupervised only for the
        new code's start-up, not also for a zygote's teardown."""
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(self.zygote.fileno())
        self.zygote.close()
        pid = self.zygote.pid

        def overdue() -> None:
            if self.zygote.pid == pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

        self.at(5.0, overdue)

    def _stop_zygote(self, timeout: float) -> None:
        """Close the zygote's socket and reap it synchronously."""
        if not self.zygote.pid:
            return
        with contextlib.suppress(KeyError, ValueError):
            if self.zygote.sock is not None:
                self.sel.unregister(self.zygote.fileno())
        self.zygote.close()
        deadline = time.monotonic() + timeout
        pid = self.zygote.pid
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.005)  # a brief, bounded wait for a process that is exiting
        self.zygote.pid = 0

    # ------------------------------------------------------------------ shutdown

    def begin_shutdown(self) -> None:
        self.shutting_down = True
        self.shutdown_deadline = time.monotonic() + self.cfg.stop_grace
        log("tower stopping", mocks=len(self.mocks), grace=self.cfg.stop_grace)
        self.events.emit("tower-stopping", mocks=len(self.mocks), grace=self.cfg.stop_grace)
        if self.zygote.pid:
            with contextlib.suppress(KeyError, ValueError):
                if self.zygote.sock is not None:
                    self.sel.unregister(self.zygote.fileno())
            self.zygote.close()  # it exits on EOF; reaping it does not respawn
        self._requeue_inflight()
        for m in list(self.mocks.values()):
            m.stop_requested = True
            if m.state != "starting":
                self._signal(m, signal.SIGTERM)
        self.at(self.cfg.stop_grace, self._kill_stragglers)

    def _kill_stragglers(self) -> None:
        self.killed_stragglers = True
        for m in list(self.mocks.values()):
            self.force_kill(m)
        # Uncommitted mocks and anything else re-parented to us.
        try:
            import psutil

            for child in psutil.Process().children():
                with contextlib.suppress(psutil.Error):
                    child.kill()
        except Exception:
            pass
        self.at(5.0, self._give_up_waiting)

    def _give_up_waiting(self) -> None:
        self.events.emit("shutdown-timeout", remaining=len(self.mocks))
        for m in list(self.mocks.values()):
            self.on_exit(m, None)

    def _shutdown_complete(self) -> bool:
        if self.mocks or self.to_commit or self.inflight:
            return False
        self.reap()
        return self.no_children

    def _final_cleanup(self) -> None:
        if self.planwatch is not None:
            self.planwatch.close()
        self.events.emit("tower-stopped", pid=self.me, exits=self.exit_counts)
        self.events.close()
        if self.http is not None:
            self.http.close()
        signal.set_wakeup_fd(-1)
        self.syncer.close()
        self.trash.close()
        log("tower stopped", exits=self.exit_counts)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The /status document. Per lot: mocks by supervision state, devices by
        their own (lot-defined) state, message counters (running + ended mocks),
        exits by reason, and the operator's roll-up (running/succeeded/failed)."""
        states: dict[str, int] = {"starting": 0, "running": 0, "stopping": 0}
        lots: dict[str, dict[str, Any]] = {}

        def lot_entry(name: str) -> dict[str, Any]:
            entry = lots.get(name)
            if entry is None:
                entry = lots[name] = {
                    "mocks": 0,
                    "starting": 0,
                    "running": 0,
                    "stopping": 0,
                    "sent": 0,
                    "send_errors": 0,
                    "retried": 0,
                    "bytes": 0,
                    "dropped": 0,
                    "states": {},
                    "exits": {},
                    "oom_killed": 0,
                }
            return entry

        counted = ("sent", "retried", "bytes", "dropped")
        for m in self.mocks.values():
            states[m.state] = states.get(m.state, 0) + 1
            lot = lot_entry(m.lot_name or "?")
            lot["mocks"] += 1
            lot[m.state] = lot.get(m.state, 0) + 1
            if m.state != "starting":
                try:
                    c = self.counters.read(m.slot)
                except RuntimeError:
                    continue
                if c.pid == m.pid:
                    for key in counted:
                        lot[key] += getattr(c, key)
                    lot["send_errors"] += c.failed
                    if c.state:
                        lot["states"][c.state] = lot["states"].get(c.state, 0) + 1
        for name, totals in self.lot_totals.items():
            lot = lot_entry(name)
            for key in counted:
                lot[key] += totals.get(key, 0)
            lot["send_errors"] += totals.get("failed", 0)
        for name, exits in self.lot_exits.items():
            lot = lot_entry(name)
            lot["exits"] = dict(exits)
        for name, n in self.oom_killed.items():
            lot_entry(name)["oom_killed"] = n
        for lot in lots.values():
            ex = lot["exits"]
            lot["succeeded"] = ex.get(policy.FINISHED, 0)
            lot["failed"] = sum(
                ex.get(r, 0) for r in (policy.CRASHED, policy.LOST, policy.FORCE_KILLED)
            )
        return {
            "version": self.version,
            "pid": self.me,
            "uptime": round(time.monotonic() - self.started_mono, 3),
            "zygote_pid": self.zygote.pid or None,
            "mocks": states,
            "total": len(self.mocks),
            "pending_triggers": len(self.pending) + len(self.deferred),
            "exits": dict(self.exit_counts),
            "oom_killed": sum(self.oom_killed.values()),
            "lots": lots,
            "shutting_down": self.shutting_down,
        }


def _since(stamp: str | None) -> float | None:
    try:
        return round(time.time() - float(stamp), 3) if stamp else None
    except ValueError:
        return None


def _handed_over(obj: Any) -> dict[str, PidRecord]:
    """Our own children from a handover's mock table; anything malformed is
    left out (it is then adopted the slow way, from its PID file)."""
    out: dict[str, PidRecord] = {}
    if not isinstance(obj, list):
        return out
    for item in obj:
        if not isinstance(item, dict) or item.pop("child", None) is not True:
            continue
        try:
            rec = pid_record_from(item)
        except (ValueError, TypeError):
            continue
        out[rec.mock_id] = rec
    return out


def _counts(obj: Any) -> dict[str, int]:
    if not isinstance(obj, dict):
        raise ValueError("counts must be an object")
    out: dict[str, int] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"count {key!r} is not an integer")
        out[key] = value
    return out


def _counts_by_name(obj: Any) -> dict[str, dict[str, int]]:
    if not isinstance(obj, dict):
        raise ValueError("counts by name must be an object")
    return {str(name): _counts(counts) for name, counts in obj.items()}


__all__ = ["DEFAULT_DEVICE", "HANDOVER", "Tower", "TowerConfig"]
