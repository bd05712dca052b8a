"""A stand-in device for tower tests, with the run_device signature.

Behaviour comes from the lot's ``constants.towertest`` mapping so one file
covers every case: ``seconds`` (run time, default: until stopped),
``exit_code`` (returned at the natural end), ``ignore_term`` (ignore SIGTERM
and never consume the stop file: only SIGKILL ends it), ``hold_mib`` (memory
it fills at its start and keeps), ``policy_dir`` (a directory where it
writes, in a file named after its PID, its CPU scheduling policy and nice
value as it begins).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any


def run(lot: Any, index: int, *, stop_file: str | None = None, counters: Any = None) -> int:
    cfg = dict(lot.lot.spec.constants.get("towertest", {}))
    if cfg.get("policy_dir"):
        seen = f"{os.sched_getscheduler(0)} {os.getpriority(os.PRIO_PROCESS, 0)}"
        with open(os.path.join(str(cfg["policy_dir"]), str(os.getpid())), "w") as f:
            f.write(seen)
    seconds = cfg.get("seconds")
    exit_code = int(cfg.get("exit_code", 0))
    if seconds == 0:
        return exit_code
    held = b"\x01" * (int(cfg.get("hold_mib", 0)) << 20)  # written, so resident  # noqa: F841
    ignore = bool(cfg.get("ignore_term"))
    if ignore:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    end = time.monotonic() + float(seconds) if seconds is not None else None
    while True:
        if counters is not None:
            counters.sent += 1
            counters.bytes += 10
            counters.publish(state="on")
        if ignore:
            time.sleep(0.2)
        elif signal.sigtimedwait([signal.SIGTERM], 0.2) is not None:
            if stop_file:
                with contextlib.suppress(OSError):
                    os.unlink(stop_file)
            return 0
        if not ignore and stop_file and os.path.exists(stop_file):
            with contextlib.suppress(OSError):
                os.unlink(stop_file)
            return 0
        if end is not None and time.monotonic() >= end:
            return exit_code
