"""Memory and CPU of devices posting over HTTP, forked from a preloaded parent.

Starts ``mockfleet receive`` as a subprocess, preloads a small lot (4 fields,
HTTP sink to the receiver, one message a second) in this process, freezes the
collector as the tower's zygote does, forks N devices, lets them run, then
prints their average USS and PSS and the CPU they spent per 1,000 sends
(whole run, and the steady state after a warm-up second).

    python bench/http_sink_memory.py [--devices 50] [--seconds 8] [--sink http|file] [--warm]

``--sink file`` runs the same devices writing to /dev/null, for comparison;
``--warm`` also runs the HTTP sink's warm_up() in the parent before forking.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import yaml

MIB = 1024 * 1024


def write_lot(directory: Path, sink: dict[str, object], devices: int) -> Path:
    doc = {
        "apiVersion": "mockfleet.dev/v1alpha1",
        "kind": "MockLot",
        "metadata": {"name": "httpmem"},
        "spec": {
            "devices": devices,
            "seed": 7,
            "deviceId": "mem-{index:04d}",
            "timing": {"interval": "1s"},
            "payload": {
                "template": {
                    "ts": {"$gen": "timestamp", "format": "epoch"},
                    "temperature": {"$gen": "sine", "period": "1h", "amplitude": 3, "offset": 21},
                    "humidity": {"$gen": "randomWalk", "start": 45, "step": 0.5},
                    "status": "ok",
                }
            },
            "sink": sink,
        },
    }
    path = directory / "lot.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def start_receiver() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mockfleet.operator.entry",
            "receive",
            "--http",
            "127.0.0.1:0",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    match = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stdout.readline())
    if not match:
        proc.kill()
        proc.wait()
        raise SystemExit("receiver did not start")
    return proc, int(match.group(1))


def received(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
        return int(json.loads(response.read())["received"])


def fork_devices(lot_path: Path, devices: int, warm: bool = False) -> list[int]:
    """Preload like the tower's zygote, then fork one process per device."""
    from mockfleet.mock.preload import loaded_lot, preload
    from mockfleet.mock.runtime import run_device
    from mockfleet.tower import immortal

    preload((str(lot_path),))
    if warm:
        from mockfleet.mock.sinks.http import warm_up

        warm_up()
    loaded = loaded_lot(lot_path)
    gc.collect()
    immortal.immortalize()  # as the zygote does (CPython 3.12+)
    gc.freeze()
    pids = []
    for i in range(devices):
        pid = os.fork()
        if pid == 0:  # the device: its logs are not the point here
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            os._exit(run_device(loaded, i))
        pids.append(pid)
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of the processes, from /proc/PID/schedstat (nanoseconds) where
    there is one: clock-tick counts are too coarse for devices this idle."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                total += int(f.read().split()[0]) / 1e9
        except OSError:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0, help="run time before measuring")
    parser.add_argument("--sink", choices=("http", "file"), default="http")
    parser.add_argument(
        "--warm",
        action="store_true",
        help="also run mockfleet.mock.sinks.http.warm_up() in the parent before forking",
    )
    args = parser.parse_args()

    receiver, port = start_receiver()
    pids: list[int] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sink: dict[str, object] = (
                {"type": "http", "url": f"http://127.0.0.1:{port}/telemetry/{{id}}"}
                if args.sink == "http"
                else {"type": "file", "path": os.devnull}
            )
            lot_path = write_lot(Path(tmp), sink, args.devices)
            pids = fork_devices(lot_path, args.devices, args.warm)
            procs = [psutil.Process(p) for p in pids]
            time.sleep(1.5)  # start-up done; the steady state starts here
            cpu0, sent0, t0 = cpu_seconds(pids), received(port), time.monotonic()
            time.sleep(max(args.seconds - 1.5, 1.0))
            cpu1, sent1, t1 = cpu_seconds(pids), received(port), time.monotonic()
            infos = [p.memory_full_info() for p in procs]
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        for pid in pids:
            os.waitpid(pid, 0)
        receiver.send_signal(signal.SIGTERM)
        try:
            receiver.wait(20)
        except subprocess.TimeoutExpired:
            receiver.kill()
            receiver.wait()
    uss = sum(i.uss for i in infos) / len(infos) / MIB
    pss = sum(i.pss for i in infos) / len(infos) / MIB
    print(
        f"devices={args.devices} sink={args.sink} warm={args.warm} "
        f"uss_avg={uss:.2f}MiB pss_avg={pss:.2f}MiB"
    )
    if args.sink == "http":
        steady = sent1 - sent0
        print(
            f"received={sent1} cpu_total={cpu1:.3f}s "
            f"cpu_per_1000_sends_total={cpu1 / max(sent1, 1) * 1000:.3f}s "
            f"steady: sends={steady} in {t1 - t0:.1f}s "
            f"cpu_per_1000_sends={(cpu1 - cpu0) / max(steady, 1) * 1000:.3f}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
