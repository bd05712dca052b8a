"""Rendering a receiver report: a one-line live summary, a final table, the JSON file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rich.table import Table


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:g}ms"


def summary_fields(report: dict[str, Any], *, full: bool = False) -> list[tuple[str, str]]:
    """The headline figures, in display order, as (name, text); ``full`` adds the
    figures that only the final table shows."""
    lat = report["latency_ms"]
    fields = [
        ("elapsed", f"{report['elapsed_s']:.1f}s"),
        ("devices", str(report["devices"])),
        ("received", str(report["received"])),
        ("rate", f"{report['rate']:g}/s"),
        ("lost", str(report["lost"])),
        ("duplicates", str(report["duplicates"])),
        ("reordered", str(report["reordered"])),
        ("malformed", str(report["malformed"])),
        ("p50", _ms(lat["p50"])),
        ("p99", _ms(lat["p99"])),
        ("max", _ms(lat["max"])),
    ]
    if full:
        fields.insert(-2, ("p90", _ms(lat["p90"])))
        fields.insert(4, ("mean rate", f"{report['mean_rate']:g}/s"))
        fields.append(("bytes", str(report["bytes"])))
    if report.get("sent") is not None:
        fields.insert(3, ("sent", str(report["sent"])))
        fields.insert(6, ("lost_vs_sent", str(report["lost_vs_sent"])))
    return fields


def summary_line(report: dict[str, Any]) -> str:
    """``receive elapsed=1.0s devices=3 received=120 ...``: a key=value log line."""
    return "receive " + " ".join(f"{name}={text}" for name, text in summary_fields(report))


def summary_table(report: dict[str, Any], *, top: int = 10) -> Table:
    """The final summary, with the devices that lost the most messages."""
    table = Table(title="mockfleet receive", show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, text in summary_fields(report, full=True):
        table.add_row(name, text)
    if report.get("late"):
        table.add_row("late (dup check skipped)", str(report["late"]))
    if report.get("clock_skewed"):
        table.add_row("negative latency (clock skew)", str(report["clock_skewed"]))
    for reason, count in sorted(report.get("malformed_reasons", {}).items()):
        table.add_row(f"malformed: {reason}", str(count))
    worst = sorted(
        ((d["lost"], name) for name, d in report.get("per_device", {}).items() if d["lost"]),
        reverse=True,
    )[:top]
    for lost, name in worst:
        table.add_row(f"lost by {name}", str(lost))
    return table


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the JSON report atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
