"""The zygote's rehearsal of a device (mockfleet.mock.preload.rehearse): it
runs a device's per-message code once in the preloading parent, changes
nothing a device could observe, and always ends."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from mockfleet.mock.device import preview
from mockfleet.mock.preload import loaded_lot, rehearse
from mockfleet.mock.runtime import DeviceRunner

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_rehearsal_sends_nothing_and_changes_no_device(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lot = loaded_lot(example)
    before = [preview(lot.compiled, i, 20, 1_800_000_000.0) for i in (0, 1, 7)]
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)

    def no_network(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a rehearsal must not open a connection")

    monkeypatch.setattr("socket.socket.connect", no_network)
    monkeypatch.setattr("socket.create_connection", no_network)
    rehearse(lot)
    # the same data for every device afterwards: same seed + index => same bytes
    assert [preview(lot.compiled, i, 20, 1_800_000_000.0) for i in (0, 1, 7)] == before
    # and the process's signal set-up is as it was
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    assert signal.set_wakeup_fd(wakeup) == wakeup


def test_rehearsal_of_a_device_that_never_sends_ends(tmp_path: Path) -> None:
    path = tmp_path / "silent.yaml"
    path.write_text(
        "apiVersion: mockfleet.dev/v1alpha1\n"
        "kind: MockLot\n"
        "metadata: {name: silent}\n"
        "spec:\n"
        "  devices: 1\n"
        "  timing: {interval: 1s, startOffset: 100000000s}\n"
        "  payload: {template: {a: 1}}\n"
        "  sink: {type: stdout}\n"
    )
    lot = loaded_lot(path)
    calls = 0
    real = DeviceRunner._send_all

    def counting(self: DeviceRunner, now: float) -> None:
        nonlocal calls
        calls += 1
        real(self, now)

    DeviceRunner._send_all = counting  # type: ignore[method-assign]
    try:
        rehearse(lot, messages=8)
    finally:
        DeviceRunner._send_all = real  # type: ignore[method-assign]
    assert 0 < calls <= 8 * 100
