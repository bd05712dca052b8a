"""The tower with --plan: a Kubernetes-mounted plan drives it through the
same trigger directory a VM uses (the plan watcher runs in the tower's loop)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from support.polling import wait_for
from support.tower_harness import TowerProc, exits, no_leftovers, pids
from test_planwatch import LOT, NODE, lot_doc, mids, publish


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tower_follows_a_mounted_plan(tmp_path: Path) -> None:
    plan_dir, root = tmp_path / "plan", tmp_path / "root"
    plan_dir.mkdir()
    lot = lot_doc(constants={"towertest": {}})  # the stand-in device: runs until stopped
    port = free_port()
    with no_leftovers():
        publish(plan_dir, {NODE: [[0, 5]], "node-b": [[5, 9]]}, lot=lot)
        tower = TowerProc(
            root, "--plan", str(plan_dir), "--node", NODE, "--http", f"127.0.0.1:{port}"
        )
        try:
            tower.wait_ready()
            wait_for(lambda: set(pids(root)) == mids(range(5)), 60, 0.05)
            publish(plan_dir, {NODE: [[0, 7]], "node-b": [[7, 9]]}, lot=lot, generation=2)
            wait_for(lambda: set(pids(root)) == mids(range(7)), 60, 0.05)
            assert not exits(tower.events())  # scaling up touched no running device
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
                status = json.loads(r.read())
            assert status["lots"][LOT]["running"] + status["lots"][LOT]["starting"] == 7
            publish(plan_dir, {NODE: [[0, 7]]}, lot=lot, paused=True, generation=3)
            wait_for(lambda: not pids(root), 60, 0.05)
            assert {e["reason"] for e in exits(tower.events())} == {"stopped"}
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
                status = json.loads(r.read())
            assert status["lots"][LOT]["exits"] == {"stopped": 7}
        finally:
            assert tower.stop() == 0
