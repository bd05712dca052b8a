"""The device process: runs one device until its natural end or a stop.

A single-threaded loop: it sleeps in ``select()`` on a signal wake-up pipe
(and the sink's socket, for MQTT commands) until the engine's next due
time, ticks the engine and sends what it produced. No threads, no asyncio:
thousands of these run side by side, so each must be small and idle when it
has nothing to do.

A stop arrives as SIGTERM/SIGINT or as the stop file appearing. The tower
signals as well as writing the file, so the device does not poll for it
more than once a second. On a stop the device disconnects cleanly (bounded
in time), deletes the stop file (consuming it is the acknowledgement) and
exits 0.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from mockfleet.mock import jsonenc
from mockfleet.mock.counters import CounterSlot
from mockfleet.mock.device import CompiledLot, DeviceEngine
from mockfleet.mock.exitcodes import EXIT_INTERNAL, EXIT_OK, EXIT_SINK_FATAL
from mockfleet.mock.preload import LoadedLot
from mockfleet.mock.rawsignal import raw_signal
from mockfleet.mock.sinks.base import FatalSinkError, Sink, SinkError

_STOP_SIGNALS = (int(signal.SIGTERM), int(signal.SIGINT))
_ENCODE = jsonenc.encoder(default=str)

#: Longest sleep without looking at the stop file.
STOP_FILE_CHECK = 1.0
#: Shortest time between two looks at the stop file.
STOP_FILE_LOOK = 0.25
#: A graceful stop never takes longer than this to close the sink.
CLOSE_TIMEOUT = 5.0
#: Backoff between connection attempts while the backend is unreachable.
OPEN_BACKOFF = (0.5, 30.0)


class Logger:
    """JSON-lines log records that always name the lot and device."""

    def __init__(self, lot: str, device: str, stream: TextIO | None = None) -> None:
        self.base = {"lot": lot, "device": device}
        self.stream = stream or sys.stderr

    def __call__(self, level: str, event: str, **fields: Any) -> None:
        record = {"ts": round(time.time(), 3), "level": level, **self.base, "event": event}
        record.update(fields)
        # try/except and one shared encoder rather than contextlib.suppress and
        # json.dumps(default=str): each of those makes objects on every call,
        # and a forked device copies the pages they touch (see preload).
        try:
            self.stream.write(_ENCODE(record) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass


class _Waker:
    """Signal-driven wake-ups for a select() loop (PEP 475 would otherwise
    resume a sleep after our handler ran)."""

    def __init__(self) -> None:
        self.stop_reason: str | None = None
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)
        self._old_fd = signal.set_wakeup_fd(self.w, warn_on_full_buffer=False)
        self._old = {sig: raw_signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop_reason = f"signal {signal.Signals(signum).name}"

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self.r, 512):
                pass

    def close(self) -> None:
        signal.set_wakeup_fd(self._old_fd)
        for sig, handler in self._old.items():
            raw_signal.signal(sig, handler)
        os.close(self.r)
        os.close(self.w)


class DeviceRunner:
    """Wires an engine, a sink, the clock, signals, the stop file and counters."""

    def __init__(
        self,
        compiled: CompiledLot,
        index: int,
        *,
        stop_file: str | None,
        counters: CounterSlot | None,
        log: Logger | None = None,
        sink_factory: Callable[[Any, dict[str, Any]], Sink] | None = None,
    ) -> None:
        self.compiled = compiled
        self.lot = compiled.lot
        self.index = index
        self.stop_file = stop_file
        self.counters = counters
        timing = self.lot.spec.timing
        self.real_start = time.time()
        backfill = timing.backfill
        self.backfill_rate = backfill.rate if backfill else 0.0
        sim_start = self.real_start - (backfill.window if backfill else 0.0)
        self.engine = DeviceEngine(compiled, index, sim_start)
        self.log = log or Logger(self.lot.name, self.engine.device_id)
        if sink_factory is None:
            from mockfleet.mock.sinks.factory import make_sink

            sink_factory = make_sink
        self.sink = sink_factory(self.lot.spec.sink, self.engine.names)
        self.waker = _Waker()
        self._last_backfill_send = 0.0
        self._errors_logged = 0
        self._stop_file_seen = float("-inf")

    # ------------------------------------------------------------------ waiting

    def stopping(self) -> bool:
        if self.waker.stop_reason is None and self.stop_file:
            # One look at the stop file per STOP_FILE_LOOK at most, not one per
            # call: a loop turn asks several times, and each look is a system
            # call that thousands of devices would repeat. A stop also arrives
            # as a signal, which is seen at once.
            now = time.monotonic()
            if now - self._stop_file_seen >= STOP_FILE_LOOK:
                self._stop_file_seen = now
                if os.path.exists(self.stop_file):
                    self.waker.stop_reason = "stop file"
        return self.waker.stop_reason is not None

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; False as soon as a stop is requested."""
        deadline = time.monotonic() + max(0.0, seconds)
        while not self.stopping():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self._select(min(left, STOP_FILE_CHECK))
        return False

    def _select(self, timeout: float) -> None:
        fds = [self.waker.r]
        sock = self.sink.fileno()
        if sock is not None and sock >= 0:
            fds.append(sock)
        service_in = self.sink.next_service_in()
        if service_in is not None:
            timeout = min(timeout, max(0.0, service_in))
        try:
            readable, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select
            readable = []
        if self.waker.r in readable:
            self.waker.drain()
        commands: list[str] = []
        if sock is not None and sock in readable:
            commands.extend(self.sink.on_readable())
        if service_in is not None and service_in <= timeout:
            commands.extend(self.sink.service())
        for cmd in commands:
            self._command(cmd)

    def _command(self, command: str) -> None:
        now = self._sim_now()
        if self.engine.on_command(command, now):
            self.log("info", "command", command=command, state=self.engine.state)
            self._publish()
        else:
            self.log("info", "command ignored", command=command, state=self.engine.state)

    def _sim_now(self) -> float:
        return time.time()

    def _wait_until_due(self, due: float) -> bool:
        """Sleep until the simulated due time. While backfilling (due lies in the
        past) messages are paced at the backfill rate instead."""
        now = time.time()
        if due <= now:
            if self.backfill_rate and now - due > 1.0:
                gap = self._last_backfill_send + 1.0 / self.backfill_rate - time.monotonic()
                if gap > 0 and not self.wait(gap):
                    return False
                self._last_backfill_send = time.monotonic()
            return not self.stopping()
        return self.wait(due - now)

    # ------------------------------------------------------------------ running

    def _publish(self, error: str | None = None) -> None:
        if self.counters is not None:
            self.counters.publish(state=self.engine.state, error=error)

    def _open(self) -> bool:
        delay = OPEN_BACKOFF[0]
        while not self.stopping():
            try:
                self.sink.open(self.wait)
                return True
            except FatalSinkError:
                raise
            except SinkError as exc:
                self._note_error(f"connect: {exc}")
                if not self.wait(delay):
                    return False
                delay = min(delay * 2, OPEN_BACKOFF[1])
        return False

    def _note_error(self, error: str) -> None:
        if self.counters is not None:
            self.counters.failed += 1
        self._publish(error=error[:120])
        # log the first few and then every 100th, so a dead backend cannot flood the tower
        self._errors_logged += 1
        if self._errors_logged <= 5 or self._errors_logged % 100 == 0:
            self.log("warning", "send failed", error=error, count=self._errors_logged)

    def _send_all(self, now_sim: float) -> None:
        engine = self.engine
        for msg in engine.tick(now_sim):
            body = engine.encode(msg, time.time())
            outcome = self.sink.send(body, self.wait)
            c = self.counters
            if c is not None:
                c.retried += outcome.retries
                if outcome.ok:
                    c.sent += 1
                    c.bytes += len(body)
                    c.last_send = time.time()
            if outcome.ok:
                if c is not None:
                    c.publish()
            else:
                self._note_error(outcome.error or "send failed")
            for cmd in outcome.commands:
                self._command(cmd)
            if self.stopping():
                break
        if self.counters is not None:
            self.counters.dropped = engine.dropped
        while engine.errors:
            self.log("warning", "template error", error=engine.errors.pop(0))

    def run(self) -> int:
        engine = self.engine
        if self.counters is not None:
            self.counters.reset(os.getpid(), self.real_start)
            self._publish()
        self.log("info", "started", index=self.index, pid=os.getpid(), state=engine.state)
        reason = "stopped"
        try:
            if not self._open():
                reason = self.waker.stop_reason or "stopped"
            else:
                while not engine.finished:
                    due = engine.next_due()
                    if not self._wait_until_due(due):
                        break
                    self._send_all(due)
                    self._publish()
                reason = engine.finished or self.waker.stop_reason or "stopped"
        except FatalSinkError as exc:
            self.log("error", "fatal sink error", error=str(exc))
            self._publish(error=str(exc)[:120])
            self._finish()
            return EXIT_SINK_FATAL
        except Exception as exc:
            # imported here, on the way out: traceback (with linecache and
            # tokenize) would add about 0.4 MiB to every mock's inherited memory
            import traceback

            self.log("error", "internal error", error=repr(exc), trace=traceback.format_exc())
            self._finish()
            return EXIT_INTERNAL
        self._finish()
        self.log("info", "finished", reason=reason, messages=engine.messages)
        return EXIT_OK

    def _finish(self) -> None:
        with contextlib.suppress(Exception):
            self.sink.close(CLOSE_TIMEOUT)
        self._publish()
        if self.stop_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.stop_file)  # consuming the trigger acknowledges the stop
        self.waker.close()


def run_device(
    lot: LoadedLot,
    index: int,
    *,
    stop_file: str | None = None,
    counters: CounterSlot | None = None,
) -> int:
    """Run device ``index`` of ``lot`` in this process; return its exit code
    (see :mod:`mockfleet.mock.exitcodes`)."""
    try:
        runner = DeviceRunner(lot.compiled, index, stop_file=stop_file, counters=counters)
    except FatalSinkError as exc:
        Logger(lot.lot.name, lot.lot.device_id(index))("error", "fatal sink error", error=str(exc))
        return EXIT_SINK_FATAL
    return runner.run()
