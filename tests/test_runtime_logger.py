"""The device's log lines and its signal wake-ups (mockfleet.mock.runtime)."""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path

from mockfleet.mock.runtime import Logger, _Waker


def test_a_log_line_is_one_json_object_naming_the_lot_and_device() -> None:
    out = io.StringIO()
    Logger("meters", "meter-007", out)("info", "started", index=7, path=Path("/x"), pid=1)
    line = out.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    record = json.loads(line)
    assert record.pop("ts") > 0
    assert record == {
        "level": "info",
        "lot": "meters",
        "device": "meter-007",
        "event": "started",
        "index": 7,
        "path": "/x",  # not JSON itself: written as its str()
        "pid": 1,
    }


def test_a_closed_log_stream_is_not_an_error() -> None:
    out = io.StringIO()
    out.close()
    Logger("meters", "meter-007", out)("warning", "send failed", error="x")


def test_the_waker_turns_a_signal_into_a_stop_and_restores_the_handlers() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    waker = _Waker()
    try:
        assert waker.stop_reason is None
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at the next bytecode
        assert waker.stop_reason == "signal SIGTERM"
        assert os.read(waker.r, 16)  # and the select() loop's pipe was written
    finally:
        waker.close()
    assert {sig: signal.getsignal(sig) for sig in before} == before
