"""``mockfleet run``: a whole lot on this machine, with live progress.

Runs a private tower as a child process (in its own session, so a Ctrl-C
reaches only us and we stop everything in order), feeds it start triggers at
the ramp rate, watches its ``/status`` and the embedded receiver, and at the
end stops every device gracefully, writes the report and returns a verdict.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mockfleet.mock.lot import LotError, MockLot
from mockfleet.tower import runplan
from mockfleet.tower.triggers import write_starts, write_stop

EXIT_OK = 0
EXIT_CHECKS_FAILED = 1
EXIT_INVALID = 3
EXIT_INTERRUPTED = 130
#: Start triggers written and made durable together (see triggers.write_starts).
START_BATCH = 256
_PR_SET_PDEATHSIG = 1


@dataclass
class RunOptions:
    lot_path: str
    devices: int | None = None
    duration: float | None = None
    ramp: float | None = None  # device starts per second
    report: str | None = None
    receiver: str = "auto"  # auto | on | off
    checks: runplan.Thresholds = field(default_factory=runplan.Thresholds)
    workdir: str | None = None
    keep: bool = False
    plain: bool | None = None  # None: plain when stdout is not a terminal
    tower_args: list[str] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # if `mockfleet run` is killed outright, its tower gets SIGTERM and stops its devices
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    os.setsid()


class LocalRun:
    def __init__(self, opts: RunOptions) -> None:
        self.opts = opts
        self.interrupted: str | None = None
        self.tower: subprocess.Popen[bytes] | None = None
        self.receiver: Any = None
        self.status: dict[str, Any] = {}
        self.started = time.monotonic()
        self.plain = opts.plain if opts.plain is not None else not sys.stdout.isatty()
        self._last_line = 0.0

    # ------------------------------------------------------------------ helpers

    def say(self, text: str) -> None:
        print(text, flush=True)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.interrupted = signal.Signals(signum).name

    def _tower_status(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"{self.tower_url}/status", timeout=5) as r:
                data: dict[str, Any] = json.loads(r.read())
                return data
        except (urllib.error.URLError, OSError, ValueError):
            return self.status

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.interrupted and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    # ------------------------------------------------------------------ phases

    def _load(self) -> MockLot:
        path = Path(self.opts.lot_path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise LotError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from None
        except yaml.YAMLError as exc:
            raise LotError(str(path), [f"not valid YAML: {exc}"]) from None
        if not isinstance(data, dict):
            raise LotError(str(path), ["the document must be a MockLot mapping"])
        return runplan.effective_lot(data, self.opts.devices, self.opts.duration, str(path))

    def _start_tower(self, root: Path) -> None:
        port = _free_port()
        self.tower_url = f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable,
            "-m",
            "mockfleet.operator.entry",
            "tower",
            "--root",
            str(root),
            "--http",
            f"127.0.0.1:{port}",
            *self.opts.tower_args,
        ]
        log = open(root.parent / "tower.log", "ab")  # noqa: SIM115 - lives as long as the tower
        self.tower = subprocess.Popen(
            cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.tower.poll() is not None:
                raise RuntimeError(
                    f"the tower exited at start (code {self.tower.returncode}); "
                    f"see {root.parent / 'tower.log'}"
                )
            try:
                with urllib.request.urlopen(f"{self.tower_url}/healthz", timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        raise RuntimeError("the tower did not become healthy within 30 s")

    def _start_receiver(self, lot: MockLot) -> None:
        addr = runplan.receiver_address(lot)
        mode = self.opts.receiver
        if mode == "off" or (mode == "auto" and addr is None):
            return
        if addr is None:
            raise RuntimeError(
                "--receiver on needs an http sink whose url points at a loopback address "
                "(e.g. http://127.0.0.1:8787/ingest/{id})"
            )
        from mockfleet.tower.receiver.service import Receiver, ReceiverStartError
        from mockfleet.tower.receiver.stats import EnvelopeFields

        env = lot.spec.envelope
        fields = EnvelopeFields(
            env.deviceField, env.seqField, env.sentAtField, env.scheduledAtField
        )
        self.receiver = Receiver(http=addr, fields=fields)
        try:
            self.receiver.start()
        except ReceiverStartError as exc:
            self.receiver = None
            raise RuntimeError(
                f"{exc}. Is another run or receiver using it? Stop it, or change the port "
                "in the lot's sink url, or pass --receiver off to send to your own server."
            ) from None

    def _progress(self, lot: MockLot, started: int, live: Any) -> None:
        st = self.status
        totals = st.get("lots", {}).get(lot.name, {})
        exits = st.get("exits", {})
        rec = self.receiver.stats.snapshot(per_device=False) if self.receiver else None
        elapsed = time.monotonic() - self.started
        duration = lot.spec.timing.duration
        remaining = f"{max(0.0, duration - elapsed):.0f}s" if duration else "-"
        mocks = st.get("mocks", {})
        row = {
            "elapsed": f"{elapsed:.0f}s",
            "remaining": remaining,
            "started": f"{started}/{lot.spec.devices}",
            "running": mocks.get("running", 0),
            "finished": exits.get("finished", 0) + exits.get("stopped", 0),
            "failed": exits.get("crashed", 0) + exits.get("lost", 0) + exits.get("force-killed", 0),
            "sent": totals.get("sent", 0),
            "errors": totals.get("send_errors", 0),
        }
        states = totals.get("states") or {}
        if rec is not None:
            row.update(received=rec["received"], lost=rec["lost"], dup=rec["duplicates"])
            row["msg/s"] = rec["rate"]
        if live is not None:
            from rich.table import Table

            table = Table(title=f"mockfleet run: {lot.name}", show_header=True)
            for key in row:
                table.add_column(key, justify="right")
            table.add_row(*(str(v) for v in row.values()))
            if states:
                table.caption = "device states: " + ", ".join(f"{k}={v}" for k, v in states.items())
            live.update(table)
        elif time.monotonic() - self._last_line >= 2:
            self._last_line = time.monotonic()
            extra = " states=" + ",".join(f"{k}:{v}" for k, v in states.items()) if states else ""
            self.say("progress " + " ".join(f"{k}={v}" for k, v in row.items()) + extra)

    # ------------------------------------------------------------------ main

    def run(self) -> int:
        try:
            lot = self._load()
        except LotError as exc:
            print(f"error: {exc.source}: invalid lot", file=sys.stderr)
            for p in exc.problems:
                print(f"  - {p}", file=sys.stderr)
            return EXIT_INVALID
        workdir = Path(self.opts.workdir or tempfile.mkdtemp(prefix="mockfleet-run-"))
        workdir.mkdir(parents=True, exist_ok=True)
        root = workdir / "tower"
        lot_file = workdir / "lot.yaml"
        lot_file.write_text(yaml.safe_dump(lot.model_dump(mode="json", exclude_none=True)))
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._run(lot, lot_file, root, workdir)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CHECKS_FAILED
        finally:
            self._shutdown()
            for s, h in old.items():
                signal.signal(s, h)
            if not self.opts.keep and self.opts.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)

    def _run(self, lot: MockLot, lot_file: Path, root: Path, workdir: Path) -> int:
        n = lot.spec.devices
        self._start_tower(root)
        self._start_receiver(lot)
        if self.receiver is not None:
            self.say(f"receiver listening on {self.receiver.http_url}")
        self.say(f"running lot {lot.name!r}: {n} devices, tower state in {root}")
        ids = [runplan.mock_id(lot, i) for i in range(n)]
        ramp = self.opts.ramp
        t0 = time.monotonic()
        started = 0
        live = None
        if not self.plain:
            from rich.live import Live

            live = Live(refresh_per_second=4, transient=False)
            live.start()
        try:
            next_status = 0.0
            while not self.interrupted:
                now = time.monotonic()
                # start triggers at the ramp rate (the directory is the tower's queue)
                due = n if not ramp else min(n, int((now - t0) * ramp) + 1)
                while started < due and not self.interrupted:
                    # in batches: one sync for all (not two fsyncs each), and the
                    # tower starts on the first while the next is written
                    upto = min(due, started + START_BATCH)
                    write_starts(root, [(ids[i], lot_file, i) for i in range(started, upto)])
                    started = upto
                if now >= next_status:
                    self.status = self._tower_status()
                    self._progress(lot, started, live)
                    next_status = now + 0.5
                exits = sum(self.status.get("exits", {}).values())
                if started == n and exits >= n and self.status.get("total", 1) == 0:
                    break
                if self.tower is not None and self.tower.poll() is not None:
                    raise RuntimeError(f"the tower died (code {self.tower.returncode})")
                duration = self.opts.duration
                if duration is not None and now - t0 > duration + 30:
                    break  # devices should have ended on their own by now
                self._sleep(0.05)
            if self.interrupted:
                self.say(f"stopping: {self.interrupted}")
            self._stop_devices(root, ids[:started])
            self._drain_receiver()
            self.status = self._tower_status()
            self._progress(lot, started, live)
        finally:
            if live is not None:
                live.stop()
        rec = self.receiver.report(per_device=False) if self.receiver else None
        report = runplan.build_report(
            lot,
            self.status,
            rec,
            time.monotonic() - t0,
            self.interrupted is not None,
            dict(self.status.get("exits", {})),
        )
        failures = runplan.verdict(report, self.opts.checks)
        report["checks_failed"] = failures
        self._summary(report)
        if self.opts.report:
            Path(self.opts.report).write_text(json.dumps(report, indent=2) + "\n")
            self.say(f"report written to {self.opts.report}")
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_CHECKS_FAILED if failures else EXIT_OK

    def _stop_devices(self, root: Path, ids: list[str]) -> None:
        """Stop every device still running through stop triggers, and wait."""
        self.status = self._tower_status()
        if self.status.get("total", 0) == 0 and not self.status.get("pending_triggers"):
            return
        for mock in ids:
            with contextlib.suppress(OSError):
                write_stop(root, mock)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.status = self._tower_status()
            if self.status.get("total", 0) == 0:
                break
            time.sleep(0.1)

    def _drain_receiver(self) -> None:
        """Let in-flight messages land: wait until received catches up with sent."""
        if self.receiver is None:
            return
        deadline = time.monotonic() + 5
        last = -1
        while time.monotonic() < deadline:
            self.status = self._tower_status()
            sent = sum(v.get("sent", 0) for v in self.status.get("lots", {}).values())
            got = self.receiver.stats.snapshot(per_device=False)["received"]
            if got >= sent or got == last:
                break
            last = got
            time.sleep(0.2)

    def _shutdown(self) -> None:
        tower, self.tower = self.tower, None
        if tower is not None and tower.poll() is None:
            tower.send_signal(signal.SIGTERM)
            try:
                tower.wait(60)
            except subprocess.TimeoutExpired:
                tower.kill()
                tower.wait(10)
        if self.receiver is not None:
            self.receiver.stop()

    def _summary(self, r: dict[str, Any]) -> None:
        lines = [
            f"lot {r['lot']}: {r['devices']} devices in {r['elapsed_s']:.1f}s",
            f"  sent {r['sent']}  send errors {r['send_errors']}  bytes {r['bytes_sent']}",
            f"  device exits: {r['device_exits']}",
        ]
        if r.get("received") is not None:
            lat = r.get("latency_ms") or {}
            lines.append(
                f"  received {r['received']}  lost {r['lost']} (in transit "
                f"{r['lost_in_transit']})  duplicates {r['duplicates']}  reordered "
                f"{r['reordered']}  malformed {r['malformed']}"
            )
            if lat:
                lines.append(
                    "  latency ms: "
                    + "  ".join(f"{k} {v}" for k, v in lat.items() if v is not None)
                )
        if r["checks_failed"]:
            lines.append("FAILED: " + "; ".join(r["checks_failed"]))
        else:
            lines.append("OK: all checks passed")
        self.say("\n".join(lines))
