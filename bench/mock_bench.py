"""One mock's cost: payloads/s for a complex template on one core, and the
memory (USS) of a standalone `mockfleet mock` process after 1,000 payloads.

    python bench/mock_bench.py [--messages 20000]

Prints figures; asserts nothing. (Memory per mock *forked from the tower's
preloaded zygote* is measured by bench/tower_bench.py: that is the figure
that matters at density; a standalone process carries its own imports.)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from mockfleet.mock.counters import CounterFile
from mockfleet.mock.device import CompiledLot, DeviceEngine
from mockfleet.mock.lot import load_lot

ROOT = Path(__file__).resolve().parent.parent
COMPLEX = ROOT / "examples" / "thermostats.yaml"  # 8 fields, states, faults, expr, variables


def payload_rate(messages: int) -> tuple[float, int]:
    compiled = CompiledLot.build(load_lot(COMPLEX))
    engine = DeviceEngine(compiled, 0, 1_767_225_600.0)
    done = 0
    size = 0
    t0 = time.process_time()
    while done < messages:
        now = engine.next_due()
        for msg in engine.tick(now):
            size += len(engine.encode(msg, now))
            done += 1
        if engine.finished:
            engine = DeviceEngine(compiled, done, 1_767_225_600.0)
    cpu = time.process_time() - t0
    return done / cpu, size // max(done, 1)


def standalone_uss(payloads: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        lot = Path(tmp) / "lot.yaml"
        text = COMPLEX.read_text()
        text = text.replace("interval: 1s", "interval: 2ms").replace(
            "duration: 30s", "duration: 1h"
        )
        text = text.replace("jitter: 100ms", "jitter: 0s").replace(
            "startSpread: 1s", "startSpread: 0s"
        )
        text = text.replace('url: "http://127.0.0.1:8080/telemetry/{id}"', "").replace(
            "type: http", "type: file\n    path: /dev/null"
        )
        lot.write_text(text)
        counters = Path(tmp) / "c.bin"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mockfleet.operator.entry",
                "mock",
                "--lot",
                str(lot),
                "--index",
                "0",
                "--counters",
                str(counters),
            ],
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if (
                    counters.exists()
                    and CounterFile.open_existing(counters).read(0).sent >= payloads
                ):
                    break
                time.sleep(0.05)
            info = psutil.Process(proc.pid).memory_full_info()
            return info.uss / 2**20, info.pss / 2**20
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=20000)
    args = ap.parse_args()
    rate, size = payload_rate(args.messages)
    print(f"template: {COMPLEX.relative_to(ROOT)} (avg {size} bytes/message)")
    print(f"payloads/s on one core (generate + encode): {rate:,.0f}")
    uss, pss = standalone_uss(1000)
    print(f"standalone `mockfleet mock` after 1,000 payloads: USS {uss:.1f} MiB, PSS {pss:.1f} MiB")
    print(f"(cpu count {os.cpu_count()}, python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
