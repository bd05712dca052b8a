"""The zygote: a preloaded, single-threaded process that forks every mock.

The tower starts it with fork + exec (a fresh interpreter that holds none of
the tower's state), it imports and preloads everything a device needs once,
freezes the garbage collector (so children do not dirty the shared pages),
then serves start requests over a SOCK_SEQPACKET socket (fd 3).

Each mock is forked with ``clone(CLONE_PARENT)`` (see sibling), so it is the
tower's direct child from birth and the tower alone reaps it. Where the
system refuses that clone, or with ``MOCKFLEET_CLONE_PARENT=0``, each batch
is double-forked instead: an intermediate child forks the mocks and exits,
so they are orphaned and re-parented to the tower, a child subreaper. The
mock then waits on a *gate* pipe whose write end goes to the tower
(SCM_RIGHTS); the tower closes it once the mock's PID file is durable. On
end-of-file the mock runs only if the PID file names it, so a tower that
dies in between never leaves a mock nobody knows about.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import json
import os
import pwd
import signal
import socket
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any

from mockfleet.mock.counters import map_slot
from mockfleet.mock.rawsignal import raw_signal
from mockfleet.tower import forkhooks, immortal, keeper, prefork, sibling
from mockfleet.tower.linux import proc_stat, set_oom_score_adj, set_process_name
from mockfleet.tower.priority import MOCK_NICE

_MOCK_DEFAULT_SIGNALS = tuple(
    int(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
)
_SIG_DFL = int(signal.SIG_DFL)
_SIG_SETMASK = int(signal.SIG_SETMASK)

_SCHED_IDLE = os.SCHED_IDLE
_PARAM0 = os.sched_param(0)

#: Exit code of a mock whose start was never committed (the tower died or
#: shut down before writing its PID file). Nobody records it.
EXIT_UNCOMMITTED = 75
#: A mock's process name (its keeper's is keeper.KEEPER_NAME).
MOCK_NAME = "mf-mock"
ZYGOTE_FD = 3
#: Most starts one batch (one intermediate process, in a double fork) holds.
MAX_BATCH = 32

Device = Callable[..., int]


def load_device(spec: str) -> Device:
    """``package.module:function`` or ``/path/to/file.py:function``."""
    target, _, func = spec.rpartition(":")
    if not target or not func:
        raise ValueError(f"device {spec!r} must look like module:function")
    if target.endswith(".py"):
        mspec = importlib.util.spec_from_file_location("_mockfleet_device", target)
        if mspec is None or mspec.loader is None:
            raise ValueError(f"cannot load {target}")
        module = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    fn = getattr(module, func)
    if not callable(fn):
        raise ValueError(f"{spec} is not callable")
    return fn


def _committed(root: str, mock_id: str) -> bool:
    """Does the mock's PID file name this process?

    Run in every new mock, so it touches as little of the zygote's memory as
    it can (each object touched is a page copied, see prefork): os.open and
    os.read rather than a buffered file object, and a look for the compact
    ``"pid":N,`` that the tower writes (pidfiles.PidRecord.to_bytes; JSON
    escapes every quote inside a string, so it can only be the key) before
    the full parse, which stays as the fallback for any other layout.
    """
    try:
        fd = os.open(f"{root}/pids/{mock_id}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 65536)
        finally:
            os.close(fd)
        pid = os.getpid()
        if b'"pid":%d,' % pid in data:
            return True
        return bool(json.loads(data).get("pid") == pid)
    except (OSError, ValueError, AttributeError):
        return False


def _idle_if_asked(req: dict[str, Any], pid: int) -> None:
    """A mock of a burst runs at idle priority until the tower brings it back,
    so that the zygote and the tower never wait behind it (see
    mockfleet.tower.priority).

    Set by the forking process, right after the fork: the mock's first steps
    (the copy-on-write faults of its return from the fork, about 0.4 ms)
    would otherwise run at the zygote's priority and take turns with its
    loop. And not by the mock itself: an idle mock may get its first CPU
    only after the burst, and would then undo the tower's restore. The tower
    restores only after the zygote's reply, which comes after this.
    """
    if "idle" in req:
        try:  # noqa: SIM105 - not contextlib.suppress: objects whose pages a mock copies
            os.sched_setscheduler(pid, _SCHED_IDLE, _PARAM0)
        except OSError:
            pass


class Zygote:
    def __init__(self, cfg: dict[str, Any], sock: socket.socket) -> None:
        from mockfleet.mock.preload import forget_validator, preload, serve_validation

        self.forget_validator = forget_validator
        self.cfg = cfg
        self.sock = sock
        self.root: str = cfg["root"]
        # Lots are validated in a child that has pydantic loaded: pydantic and
        # the lot schema never load here, so every fork copies less (see
        # mock.plain). Started first, it imports while this process preloads.
        serve_validation()
        preload(())
        forkhooks.skip_threading_after_fork_when_alone()
        self.device = load_device(cfg["device"])
        # Not mapped here: each mock maps only its own slot's page (see counters).
        self.counters_fd = os.open(cfg["counters"], os.O_RDWR | os.O_CLOEXEC)
        # The tower sized the file before starting us, once for its life.
        self.counters_size = os.fstat(self.counters_fd).st_size
        self.creds: tuple[int, int] | None = None
        self._restart_cache: dict[int, tuple[Any, dict[str, Any]]] = {}
        #: placeholders kept from one full batch to the next (see start_batch)
        self._placeholders: list[object] | None = None
        if cfg.get("run_as"):
            pw = pwd.getpwnam(cfg["run_as"])
            self.creds = (pw.pw_uid, pw.pw_gid)
        # Loaded only when limits are asked for: an extension module is five
        # more mappings that every fork copies and every exit tears down.
        self.resource: Any = None
        if cfg.get("rlimit_nofile") or cfg.get("rlimit_as"):
            import resource

            self.resource = resource

    def serve(self) -> None:
        gc.collect()
        began = time.monotonic()
        made = immortal.immortalize()  # no reference-count writes to them either (3.12+)
        took = time.monotonic() - began
        gc.freeze()  # preloaded objects stay out of the children's collections
        ready = {
            "op": "ready",
            "pid": os.getpid(),
            "immortal_objects": made,
            "immortal_ms": round(took * 1000, 1),
            "immortal_off": immortal.why_not(),
            # how mocks are forked (a clone the system refuses later falls back)
            "forking": "clone-parent" if sibling.enabled() else "double-fork",
        }
        self.sock.send(json.dumps(ready).encode())
        while True:
            batch = self._receive_batch()
            if batch is None:
                return  # the tower closed its end: shut down
            for reply, fd in self.start_batch(batch):
                payload = json.dumps(reply).encode()
                if fd is None:
                    self.sock.send(payload)
                else:
                    self.sock.sendmsg(
                        [payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array("i", [fd]))]
                    )
                    os.close(fd)

    def _receive_batch(self) -> list[dict[str, Any]] | None:
        """Block for one request, then take whatever else is queued (up to
        MAX_BATCH): one intermediate process then forks them all."""
        batch: list[dict[str, Any]] = []
        while len(batch) < MAX_BATCH:
            try:
                data = self.sock.recv(65536, socket.MSG_DONTWAIT if batch else 0)
            except InterruptedError:
                continue
            except BlockingIOError:
                break
            except ConnectionResetError:
                return None
            if not data:
                return None
            batch.append(json.loads(data))
        return batch

    def start_batch(self, batch: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int | None]]:
        from mockfleet.mock.loterror import LotError, ValidatorFailed
        from mockfleet.mock.preload import prepare_lot

        out: list[tuple[dict[str, Any], int | None]] = []
        todo: list[tuple[dict[str, Any], Any]] = []
        refreeze = False
        seen: dict[str, Any] = {}  # a batch mostly starts devices of one lot: look it up once
        for req in batch:
            mid = req["id"]
            try:
                lot = seen.get(req["lot"])
                if lot is None:
                    lot, fresh = prepare_lot(req["lot"])
                    seen[req["lot"]] = lot
                    refreeze |= fresh
                todo.append((req, lot))
            except ValidatorFailed as exc:  # nothing known about the lot: try again
                out.append(({"id": mid, "ok": False, "permanent": False, "error": str(exc)}, None))
            except LotError as exc:
                why = "invalid lot: " + "; ".join(exc.problems)
                out.append(({"id": mid, "ok": False, "permanent": True, "error": why}, None))
            except OSError as exc:
                why = f"cannot read the lot {req['lot']}: {exc.strerror or exc}"
                out.append(({"id": mid, "ok": False, "permanent": True, "error": why}, None))
            except Exception as exc:
                why = f"lot failed to load: {exc}"
                out.append(({"id": mid, "ok": False, "permanent": True, "error": why}, None))
        if not todo:
            return out
        if refreeze:  # a lot seen for the first time: share its objects, untouched by gc
            # its sink may have imported threading (paho-mqtt does)
            forkhooks.skip_threading_after_fork_when_alone()
            gc.collect()
            # not the requests in hand: only the lot's objects are kept for good
            in_hand = [batch, *batch, out, *out, *(reply for reply, _ in out), todo, *todo, seen]
            immortal.immortalize(keep_mortal=in_hand)
            del in_hand
            gc.freeze()
        gates = [os.pipe() for _ in todo]
        # The children's allocations then take fresh pages, not copies (see
        # prefork). Filling costs 2-4 ms: during a burst of full batches the
        # holes stay filled from one batch to the next, and only the few that
        # this process opens in between are left for the children.
        placeholders = None if refreeze else self._placeholders
        self._placeholders = None
        if placeholders is None:
            placeholders = prefork.fill()
            prefork.trim_heap()
        reports = self._fork_siblings(todo, gates) if sibling.enabled() else None
        if reports is None:
            reports = self._fork_through_intermediate(todo, gates)
        if len(batch) >= MAX_BATCH:  # more are likely queued: keep the holes filled
            self._placeholders = placeholders
        del placeholders
        for r, _w in gates:
            os.close(r)
        for i, (req, lot) in enumerate(todo):
            gate_w = gates[i][1]
            try:
                pid_s, ticks_s = reports[i].split()
                pid, ticks = int(pid_s), int(ticks_s)
            except (ValueError, IndexError):
                pid, ticks = 0, -1
            if ticks < 0:
                os.close(gate_w)
                err = {"id": req["id"], "ok": False, "permanent": False, "error": "fork failed"}
                out.append((err, None))
                continue
            reply = {
                "id": req["id"],
                "ok": True,
                "pid": pid,
                "start_ticks": ticks,
                "lot_name": lot.lot.name,
                "restart": self._restart_policy(lot),
            }
            out.append((reply, gate_w))
        return out

    def _fork_siblings(
        self, todo: list[tuple[dict[str, Any], Any]], gates: list[tuple[int, int]]
    ) -> list[str] | None:
        """Fork each mock as the tower's own child (see sibling): "pid ticks"
        per mock, ticks -1 where the fork failed. None when the system refuses
        clone(CLONE_PARENT) itself: the caller then double-forks instead."""
        # Fork them all first: every page this process writes between two
        # forks is copied (copy-on-write), so the loop does next to nothing.
        pids = [-1] * len(todo)
        for i in range(len(todo)):
            try:
                pid = sibling.fork_sibling()
            except OSError:
                if not sibling.available() and i == 0:
                    return None  # refused, and nothing forked yet
                continue
            if pid == 0:
                self._mock_child(todo[i], gates, i, None)
            _idle_if_asked(todo[i][0], pid)
            pids[i] = pid
        tower = os.getppid()
        lines = []
        for pid in pids:
            # Not our child, so nothing stops the tower reaping it; but it waits
            # on its gate and cannot have exited unless killed. A dead or
            # foreign process here (PID reused) is reported as a failed fork.
            st = proc_stat(pid) if pid > 0 else None
            ok = st is not None and st.ppid == tower and st.state not in ("Z", "X")
            lines.append(f"{pid} {st.start_ticks if st is not None and ok else -1}")
        return lines

    def _fork_through_intermediate(
        self, todo: list[tuple[dict[str, Any], Any]], gates: list[tuple[int, int]]
    ) -> list[str]:
        """An intermediate child forks the mocks and exits, so they are
        re-parented to the tower (a child subreaper)."""
        report_r, report_w = os.pipe()
        mid_pid = os.fork()
        if mid_pid == 0:  # the intermediate: fork the mocks, report them, vanish
            try:
                set_process_name("mf-intermediate")
                os.close(report_r)
                pids = [0] * len(todo)
                for i in range(len(todo)):
                    pid = os.fork()
                    if pid == 0:
                        self._mock_child(todo[i], gates, i, report_w)
                    _idle_if_asked(todo[i][0], pid)
                    pids[i] = pid
                lines = []
                for pid in pids:
                    st = proc_stat(pid)  # still our child: it cannot be reaped yet
                    lines.append(f"{pid} {st.start_ticks if st else -1}")
                data = ("\n".join(lines) + "\n").encode()
                while data:
                    data = data[os.write(report_w, data) :]
            finally:
                os._exit(0)
        os.close(report_w)
        chunks = []
        while True:
            try:
                chunk = os.read(report_r, 65536)
            except InterruptedError:
                continue
            if not chunk:
                break
            chunks.append(chunk)
        os.close(report_r)
        os.waitpid(mid_pid, 0)
        return b"".join(chunks).decode().split("\n")

    def _restart_policy(self, lot: Any) -> dict[str, Any]:
        """The lot's restart settings as JSON (cached: one copy per lot, not per start)."""
        key = id(lot)
        hit = self._restart_cache.get(key)
        if hit is None or hit[0] is not lot:
            hit = (lot, lot.lot.spec.restart.to_data())
            self._restart_cache[key] = hit
        return hit[1]

    def _mock_child(
        self,
        item: tuple[dict[str, Any], Any],
        gates: list[tuple[int, int]],
        i: int,
        report_w: int | None,
    ) -> None:
        """Right after the fork, in the mock: drop the other mocks' descriptors
        and the zygote's own (its lot validator's socket)."""
        set_process_name(MOCK_NAME)
        self.forget_validator()
        if report_w is not None:
            os.close(report_w)
        for j, (r, w) in enumerate(gates):
            os.close(w)
            if j != i:
                os.close(r)
        self._mock(item[0], item[1], gates[i][0])

    def _mock(self, req: dict[str, Any], lot: Any, gate_r: int) -> None:
        """The mock process. Never returns."""
        code = 1
        keeper_pid: int | None = None
        try:
            # Its own process group (killpg reaches all of it), but the zygote's
            # session: see own_session.
            os.setpgid(0, 0)
            # Devices run a little below the tower: when thousands of them share a
            # busy machine, the supervisor (exit detection, stops) and a receiver
            # on the same machine still get the CPU first.
            try:  # noqa: SIM105 - not contextlib.suppress: an object whose pages each mock copies
                os.nice(MOCK_NICE)
            except OSError:
                pass
            self.sock.close()
            # Through the signal module's C layer (see mockfleet.mock.rawsignal).
            for sig in _MOCK_DEFAULT_SIGNALS:
                raw_signal.signal(sig, _SIG_DFL)
            raw_signal.pthread_sigmask(_SIG_SETMASK, ())
            while True:
                try:
                    if not os.read(gate_r, 1):
                        break
                except InterruptedError:
                    continue
            os.close(gate_r)
            if not _committed(self.root, req["id"]):
                os._exit(EXIT_UNCOMMITTED)
            resource = self.resource
            if self.cfg.get("rlimit_nofile"):
                n = int(self.cfg["rlimit_nofile"])
                resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
            if self.cfg.get("rlimit_as"):
                n = int(self.cfg["rlimit_as"])
                resource.setrlimit(resource.RLIMIT_AS, (n, n))
            if self.cfg.get("oom_score_adj") is not None:
                # the kernel's first OOM victims, before the tower (see TowerConfig);
                # raising it needs no privilege, and a device runs even if it fails
                try:  # noqa: SIM105 - not contextlib.suppress (see above)
                    set_oom_score_adj(int(self.cfg["oom_score_adj"]))
                except OSError:
                    pass
            if self.creds is not None and os.geteuid() == 0:
                uid, gid = self.creds
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
            if self.cfg.get("keepers"):
                # after the privilege drop and the limits, before the device
                # opens anything: see mockfleet.tower.keeper
                keeper_pid = keeper.spawn(MOCK_NAME)
            slot = map_slot(self.counters_fd, int(req["slot"]), self.counters_size)
            os.close(self.counters_fd)
            slot.reset(os.getpid(), time.time())
            stop_file = f"{self.root}/stop/{req['id']}"
            code = int(self.device(lot, int(req["index"]), stop_file=stop_file, counters=slot))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            import traceback  # not preloaded: see mockfleet.mock.runtime.run

            traceback.print_exc()
            code = 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            if keeper_pid is not None:
                # ending by itself: the keeper (an unreaped child of ours, so
                # the PID is still its) has nothing left to keep
                with contextlib.suppress(OSError):
                    os.kill(keeper_pid, signal.SIGKILL)
            os._exit(code)


def own_session() -> None:
    """Put the zygote, and so every mock it forks, in a session of its own.

    Where the kernel groups tasks into scheduling autogroups by session (the
    default on hosts where processes sit in the root CPU cgroup), every
    session competes as one: mocks in thousands of sessions of their own would
    each weigh as much as the tower and a receiver beside it, and their nice
    value would count for nothing. In one shared session the whole fleet weighs
    as one, so exit detection and the receiver keep getting the CPU when the
    devices saturate it. Inside a container's CPU cgroup this changes nothing.
    """
    with contextlib.suppress(OSError):  # already a session leader: nothing to do
        os.setsid()


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[1])
    sock = socket.socket(fileno=ZYGOTE_FD)
    os.set_inheritable(ZYGOTE_FD, False)
    own_session()
    try:
        try:
            zygote = Zygote(cfg, sock)
        except Exception as exc:
            print(
                json.dumps({"component": "zygote", "msg": "start-up failed", "error": str(exc)}),
                file=sys.stderr,
                flush=True,
            )
            return 1
        # Named after its validator was forked (which keeps the interpreter's
        # name); a mock carries this name from its clone until it names itself.
        set_process_name("mf-zygote")
        zygote.serve()
        return 0
    finally:
        # its lot validator goes with it (started first thing in Zygote())
        with contextlib.suppress(ImportError):
            from mockfleet.mock.preload import stop_validator

            stop_validator()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
