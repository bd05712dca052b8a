"""`mockfleet run` at load: N devices at 1 message/s each for D seconds into
the embedded HTTP receiver on this machine.

    python bench/run_bench.py [--devices 2000] [--seconds 60]

Prints: achieved messages/s versus scheduled, the share of scheduled messages
sent, p99 lag of sends behind their schedule, CPU seconds per 1,000 messages
(the whole process tree: tower, zygote, devices, run + receiver) and peak
memory (sum of PSS over that tree, read once when every device runs).
Asserts nothing.

The schedule lag is measured by the receiver as each message's `sent_at`
minus its scheduled time (`due_at`, stamped by the device: envelope
scheduledAtField): how far devices fell behind their schedule. Latency is
arrival minus `sent_at`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

from mockfleet.tower.keeper import KEEPER_NAME

LOT = {
    "apiVersion": "mockfleet.dev/v1alpha1",
    "kind": "MockLot",
    "metadata": {"name": "bench"},
    "spec": {
        "seed": 1,
        "timing": {"interval": "1s", "startSpread": "1s"},
        "envelope": {"scheduledAtField": "due_at"},
        "payload": {
            "template": {
                "ts": {"$gen": "timestamp", "format": "epoch"},
                "temperature": {"$gen": "sine", "period": "1h", "amplitude": 3, "offset": 20},
                "humidity": {"$gen": "randomWalk", "start": 50, "step": 0.5, "min": 0, "max": 100},
                "status": "ok",
            }
        },
        "sink": {"type": "http", "url": "http://127.0.0.1:{port}/in/{{id}}"},
    },
}


def tree_pids(root: int) -> list[int]:
    """Every descendant of ``root`` (re-parented devices included) but the
    devices' keepers, read from /proc directly: processes come and go by the
    thousand here, and one that vanishes mid-walk must not spoil the count. A
    keeper (mockfleet.tower.keeper) shares its device's address space: it is
    not a device, and its memory is the device's."""
    parent: dict[int, int] = {}
    keepers: set[int] = set()
    name = KEEPER_NAME.encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: split after the last ")"
        end = stat.rindex(b")")
        parent[int(entry.name)] = int(stat[end + 2 :].split()[1])
        if stat[stat.index(b"(") + 1 : end] == name:
            keepers.add(int(entry.name))
    kids: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for child in kids.get(todo.pop(), []):
            if child not in keepers:
                out.append(child)
                todo.append(child)
    return out


def tree_pss(root: int) -> float:
    """PSS MiB of a process tree (keepers left out: see ``tree_pids``)."""
    pss = 0.0
    for pid in [root, *tree_pids(root)]:
        with contextlib.suppress(psutil.Error):
            pss += psutil.Process(pid).memory_full_info().pss
    return pss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--port", type=int, default=18787)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lot = json.loads(json.dumps(LOT).replace("{port}", str(args.port)))
        lot["spec"]["devices"] = args.devices
        lot["spec"]["timing"]["duration"] = args.seconds
        path = Path(tmp) / "lot.yaml"
        path.write_text(yaml.safe_dump(lot))
        report = Path(tmp) / "report.json"
        cmd = [
            sys.executable,
            "-m",
            "mockfleet.operator.entry",
            "run",
            str(path),
            "--plain",
            "--report",
            str(report),
            "--max-start-rate",
            "1000",
        ]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak = {"pss": 0.0, "at": 0.0}
        stop = threading.Event()

        def sampler() -> None:
            # Memory is read once, when the most devices run (the peak): reading
            # smaps of thousands of processes takes each one's memory-map lock
            # and a core for a while, so sampling it all along would itself
            # delay the sends this bench measures. The peak is when every device
            # runs, or, if the first finish before the last start, when the
            # count stops growing.
            last, flat = 0, 0
            while not stop.wait(2):
                n = len(tree_pids(proc.pid))
                flat = flat + 1 if n == last and n > args.devices // 2 else 0
                last = n
                if n >= args.devices + 2 or flat >= 3:  # devices + tower + zygote
                    peak["pss"] = tree_pss(proc.pid)
                    peak["at"] = time.monotonic() - t0
                    return

        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        out, _ = proc.communicate()
        stop.set()
        th.join()
        wall = time.monotonic() - t0
        cpu_total = psutil.Process().cpu_times()
        rep = json.loads(report.read_text())
    scheduled = args.devices * args.seconds
    sent = rep["sent"]
    lat = rep.get("latency_ms") or {}
    lag = rep.get("schedule_lag_ms") or {}
    cpu = cpu_total.children_user + cpu_total.children_system
    pss = peak["pss"]
    print("\n".join(out.strip().splitlines()[-7:]))
    print(f"devices {args.devices} x 1 msg/s for {args.seconds:.0f}s (wall {wall:.0f}s)")
    print(f"scheduled {scheduled:.0f}  sent {sent} ({sent / scheduled:.2%})")
    print(f"received {rep['received']}  lost {rep['lost']}")
    print(f"achieved {sent / args.seconds:.0f} msg/s vs scheduled {args.devices} msg/s")
    print(f"schedule lag (due -> sent) ms: p50 {lag.get('p50')}  p99 {lag.get('p99')}")
    print(f"latency (sent -> received) ms: p50 {lat.get('p50')}  p99 {lat.get('p99')}")
    print(f"cpu seconds per 1,000 messages (whole tree): {cpu / max(sent, 1) * 1000:.2f}")
    print(
        f"PSS of the whole tree with all devices running (at {peak['at']:.0f}s): "
        f"{pss:.0f} MiB ({pss / args.devices:.2f} MiB/device)"
    )


if __name__ == "__main__":
    main()
