"""``perf record``, system-wide, for the duration of a ``with`` block.

Shared by ``exit_trace`` (scheduler and signal tracepoints during kills) and
``start_profile`` (CPU samples with call chains during a start burst). perf
starts with its events off and is switched on through its control fifo: its
"ack" says the recording is live, so nothing the block does is missed.

With ``MOCKFLEET_BENCH_KEEP_PERF=DIR`` in the environment, each recording's
perf.data is copied into DIR, for ``perf report -i`` by hand.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Environment variable naming a directory to keep perf.data files in.
KEEP_ENV = "MOCKFLEET_BENCH_KEEP_PERF"


def _open_fifo(path: Path, mode: int, proc: subprocess.Popen[bytes]) -> int:
    """Open one end of perf's control fifos, giving up if perf exits or 30 s pass."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return os.open(path, mode | os.O_NONBLOCK)
        except OSError as exc:  # ENXIO: nobody has the read end open yet
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"perf record did not start: {exc}") from None
            time.sleep(0.02)


def _read_ack(fd: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if b"ack" in os.read(fd, 64):
                return
        except BlockingIOError:
            pass
        time.sleep(0.02)
    raise RuntimeError("perf record did not acknowledge the enable command")


def why_not(needs_event: str | None = None) -> str | None:
    """Why a system-wide recording cannot run here, or None when it can."""
    if shutil.which("perf") is None:
        return "perf is not installed (Debian: linux-perf)"
    if os.geteuid() != 0:
        return "system-wide recording needs root"
    if needs_event is not None:
        probe = subprocess.run(
            ["perf", "list", needs_event], capture_output=True, text=True, timeout=30
        )
        if needs_event not in probe.stdout:
            return f"the kernel's {needs_event} tracepoint is not available here"
    return None


class PerfRecord:
    """``perf record -a RECORD_ARGS`` while the block runs; afterwards ``lines``
    holds ``perf script -F SCRIPT_FIELDS``, and ``seconds`` how long it recorded."""

    def __init__(self, record_args: list[str], script_fields: str) -> None:
        self._record_args = record_args
        self._fields = script_fields
        self._dir = Path(tempfile.mkdtemp(prefix="mockfleet-perf-"))
        self._data = self._dir / "perf.data"
        self._proc: subprocess.Popen[bytes] | None = None
        self._t0 = 0.0
        self.seconds = 0.0
        self.lines: list[str] = []

    @property
    def pid(self) -> int | None:
        """perf's own process (its samples are the recording's own cost)."""
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> PerfRecord:
        ctl, ack = self._dir / "ctl", self._dir / "ack"
        os.mkfifo(ctl)
        os.mkfifo(ack)
        self._proc = subprocess.Popen(
            [
                "perf",
                "record",
                "-q",
                "-a",
                "-m",
                "8M",
                "-D",
                "-1",
                *self._record_args,
                "--control",
                f"fifo:{ctl},{ack}",
                "-o",
                str(self._data),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            ctl_fd = _open_fifo(ctl, os.O_WRONLY, self._proc)
            ack_fd = _open_fifo(ack, os.O_RDONLY, self._proc)
            try:
                os.write(ctl_fd, b"enable\n")
                _read_ack(ack_fd, self._proc)
            finally:
                os.close(ctl_fd)
                os.close(ack_fd)
        except BaseException:
            self._proc.kill()
            self._proc.wait()
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.monotonic() - self._t0
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        try:
            keep = os.environ.get(KEEP_ENV)
            if keep and self._data.exists():
                # For ``perf report -i`` by hand: the printed summary is not all.
                Path(keep).mkdir(parents=True, exist_ok=True)
                dest = Path(keep) / f"{type(self).__name__}-{time.strftime('%H%M%S')}.data"
                shutil.copyfile(self._data, dest)
                print(f"perf data kept in {dest}", file=sys.stderr)
            if self._data.exists():
                out = subprocess.run(
                    ["perf", "script", "-i", str(self._data), "-F", self._fields],
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                self.lines = out.stdout.splitlines()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
