"""`mockfleet run` end to end: a private tower, real devices, the embedded receiver."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from support.polling import wait_for

MOCKFLEET = [sys.executable, "-m", "mockfleet.operator.entry"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_lot(tmp_path: Path, devices: int, port: int, **spec: Any) -> Path:
    doc = {
        "apiVersion": "mockfleet.dev/v1alpha1",
        "kind": "MockLot",
        "metadata": {"name": "runlot"},
        "spec": {
            "devices": devices,
            "seed": 3,
            "timing": {"interval": "1s", "startSpread": "1s", "duration": "4s"},
            "payload": {"template": {"v": {"$gen": "uniform", "min": 0, "max": 9}}},
            "sink": {"type": "http", "url": f"http://127.0.0.1:{port}/in/{{id}}"},
            **spec,
        },
    }
    path = tmp_path / "lot.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MOCKFLEET, "run", *args, "--plain"], capture_output=True, text=True, timeout=timeout
    )


def test_200_devices_everything_sent_arrives(tmp_path: Path) -> None:
    lot = write_lot(tmp_path, 200, free_port(), envelope={"scheduledAtField": "due_at"})
    report = tmp_path / "report.json"
    r = run([str(lot), "--report", str(report), "--max-loss", "0"])
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(report.read_text())
    assert rep["device_exits"] == {"finished": 200}
    assert rep["sent"] >= 200 * 3
    assert rep["received"] == rep["sent"]
    assert rep["lost"] == 0 and rep["duplicates"] == 0 and rep["lost_in_transit"] == 0
    assert rep["receiver"]["devices"] == 200
    assert rep["schedule_lag_ms"]["count"] == rep["received"]
    assert "OK: all checks passed" in r.stdout


def test_faults_show_up_at_their_rates(tmp_path: Path) -> None:
    lot = write_lot(
        tmp_path,
        20,
        free_port(),
        timing={"interval": "20ms", "maxMessages": 300},
        faults=[
            {"type": "drop", "rate": 0.05},
            {"type": "duplicate", "rate": 0.05},
            {"type": "malformed", "rate": 0.02},
        ],
    )
    report = tmp_path / "report.json"
    r = run([str(lot), "--report", str(report)])
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(report.read_text())
    n = 20 * 300  # generated messages (seqs)

    def near(observed: int, rate: float) -> bool:
        return abs(observed - n * rate) < 5 * math.sqrt(n * rate) + 5

    assert near(rep["duplicates"], 0.05 * 0.93), rep
    assert near(rep["malformed"], 0.02 * 1.05), rep
    # seq gaps: dropped ones, plus malformed ones whose seq could not be read
    assert near(rep["lost"], 0.05 + 0.02 * 0.95), rep
    assert rep["lost_in_transit"] == 0


def test_invalid_lot_is_named_and_nothing_runs(tmp_path: Path) -> None:
    lot = write_lot(tmp_path, 2, free_port(), timing={"interval": "never"})
    r = run([str(lot)])
    assert r.returncode == 3
    assert "spec.timing.interval" in r.stderr and "Traceback" not in r.stderr


def test_ctrl_c_stops_everything_promptly(tmp_path: Path) -> None:
    lot = write_lot(tmp_path, 50, free_port(), timing={"interval": "500ms"})
    work = tmp_path / "work"
    p = subprocess.Popen(
        [*MOCKFLEET, "run", str(lot), "--plain", "--workdir", str(work)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pids_dir = work / "tower" / "pids"
        wait_for(lambda: pids_dir.exists() and len(os.listdir(pids_dir)) == 50, 60)
        mocks = []
        for f in pids_dir.iterdir():
            info = json.loads(f.read_text())
            mocks.append(psutil.Process(info["pid"]))
        family = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        assert time.monotonic() - t0 < 20
        assert p.returncode == 130, out + err
        assert "stopping: SIGINT" in out
        for proc in [*mocks, *family]:
            with pytest.raises(psutil.NoSuchProcess):
                proc.status()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
