"""Pure planning for ``mockfleet run``: the effective lot, where the embedded
receiver listens, the final report and the verdict. No I/O here."""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mockfleet.mock.lot import MockLot, parse_lot


@dataclass(frozen=True)
class Thresholds:
    """Checks a run must meet; None means not checked."""

    max_loss: float | None = None  # fraction of sent messages
    max_errors: int | None = None  # failed sends reported by devices
    allow_failed_devices: bool = False


def effective_lot(
    data: dict[str, Any], devices: int | None, duration: float | None, source: str
) -> MockLot:
    """The lot as given, with command-line overrides applied (and re-validated)."""
    doc = copy.deepcopy(data)
    spec = doc.setdefault("spec", {})
    if devices is not None:
        spec["devices"] = devices
    if duration is not None:
        spec.setdefault("timing", {})["duration"] = duration
    return parse_lot(doc, source)


def mock_id(lot: MockLot, index: int) -> str:
    """A trigger-safe mock id: the device id when it is safe, else lot-index."""
    device = lot.device_id(index)
    safe = all(c.isalnum() or c in "._-" for c in device) and not device.startswith(".")
    return device if safe and len(device) <= 200 else f"{lot.name}-{index}"


def receiver_address(lot: MockLot) -> tuple[str, int] | None:
    """Where the embedded receiver should listen: an HTTP sink whose URL points
    at a loopback address is served by it (the quickstart's case)."""
    sink = lot.spec.sink
    if sink.type != "http":
        return None
    parts = urlsplit(sink.url.replace("{", "").replace("}", ""))
    host = parts.hostname or ""
    if host == "localhost":
        host = "127.0.0.1"
    try:
        if not ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        return None
    if parts.scheme != "http":
        return None
    return host, parts.port or 80


def build_report(
    lot: MockLot,
    tower_status: dict[str, Any],
    receiver: dict[str, Any] | None,
    elapsed: float,
    interrupted: bool,
    device_exits: dict[str, int],
) -> dict[str, Any]:
    """The run's report: what devices did (tower) and what arrived (receiver)."""
    totals = tower_status.get("lots", {}).get(lot.name, {})
    sent = int(totals.get("sent", 0))
    report: dict[str, Any] = {
        "lot": lot.name,
        "devices": lot.spec.devices,
        "elapsed_s": round(elapsed, 3),
        "interrupted": interrupted,
        "sent": sent,
        "send_errors": int(totals.get("send_errors", 0)),
        "bytes_sent": int(totals.get("bytes", 0)),
        "device_exits": dict(sorted(device_exits.items())),
        "device_states": totals.get("states", {}),
    }
    if receiver is not None:
        received = int(receiver.get("received", 0))
        report.update(
            received=received,
            unique=receiver.get("unique"),
            # seq gaps: includes messages the lot's drop/offline faults withheld
            lost=receiver.get("lost", 0),
            # sent by devices but never arrived (network / receiver side)
            lost_in_transit=max(0, sent - received),
            duplicates=receiver.get("duplicates", 0),
            reordered=receiver.get("reordered", 0),
            malformed=receiver.get("malformed", 0),
            latency_ms=receiver.get("latency_ms", {}),
            schedule_lag_ms=receiver.get("schedule_lag_ms"),
            receiver=receiver,
        )
    else:
        report.update(received=None, lost=None, duplicates=None)
    return report


def verdict(report: dict[str, Any], checks: Thresholds) -> list[str]:
    """Why the run failed its checks (empty when it passed)."""
    failures = []
    exits = report.get("device_exits", {})
    failed = sum(n for reason, n in exits.items() if reason in ("crashed", "lost", "force-killed"))
    if failed and not checks.allow_failed_devices:
        failures.append(f"{failed} device(s) failed: {exits}")
    if checks.max_errors is not None and report["send_errors"] > checks.max_errors:
        failures.append(f"{report['send_errors']} send errors > --max-errors {checks.max_errors}")
    if checks.max_loss is not None and report.get("received") is not None:
        sent = max(report["sent"], 1)
        loss = (report.get("lost", 0) or 0) / sent
        if loss > checks.max_loss:
            failures.append(f"loss {loss:.2%} > --max-loss {checks.max_loss:.2%}")
    return failures
