"""In-place upgrade from an artifact served by moto's S3 server while 200 mocks
run: none restarted, all still reaped afterwards; a wrong checksum (or a
missing object) leaves the running version alone."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from support.moto_s3 import CREDENTIALS, MotoS3, moto_s3_server
from support.polling import wait_for
from support.tower_harness import TowerProc, exits, no_leftovers, pids, write_lot
from test_tower_upgrade import build_artifact

from mockfleet.tower.triggers import ensure_dirs, write_stop, write_upgrade

BUCKET = "mockfleet-artifacts"
MOCKS = 200


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    with no_leftovers():
        yield tmp_path


@pytest.fixture
def s3(base: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoS3]:
    # The tower (a subprocess) takes its credentials from the usual environment.
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(base / "no-credentials"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with moto_s3_server(base) as server:
        yield server


def _start_many(root: Path, lot: Path, n: int) -> list[str]:
    """n start triggers, renamed into place after writing (as write_start does)."""
    ensure_dirs(root)
    ids = [f"s{i:03d}" for i in range(n)]
    for i, mock_id in enumerate(ids):
        tmp = root / "tmp" / mock_id
        tmp.write_text(json.dumps({"lot": str(lot), "index": i}))
        os.rename(tmp, root / "start" / f"{mock_id}.json")
    return ids


def test_upgrade_from_s3_keeps_200_mocks_and_rejects_a_wrong_checksum(
    base: Path, s3: MotoS3
) -> None:
    root = base / "root"
    lot = write_lot(base / "lot.yaml", "s3up", {}, restart={"policy": "Never"})
    artifact = base / "mockfleet-9.9.9.zip"
    sha = build_artifact(artifact)
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    client.upload_file(str(artifact), BUCKET, "mockfleet-9.9.9.zip")

    tower = TowerProc(root, "--stop-grace", "3s", "--http", "127.0.0.1:0")
    tower.wait_ready()
    ids = _start_many(root, lot, MOCKS)
    wait_for(lambda: len(pids(root)) == MOCKS and not os.listdir(root / "start"), 180, 0.1)
    before = pids(root)
    assert sorted(before) == ids
    assert tower.status()["version"] != "9.9.9"

    write_upgrade(
        root, "9.9.9", f"s3://{BUCKET}/mockfleet-9.9.9.zip", sha, endpoint_url=s3.endpoint_url
    )
    wait_for(lambda: any(e["event"] == "upgrade-complete" for e in tower.events()), 120, 0.1)
    started = [e for e in tower.events() if e["event"] == "tower-started"]
    assert [e["version"] for e in started][-1] == "9.9.9", tower.log()
    assert all(e["pid"] == tower.pid for e in started)  # exec in place, same process
    assert str(started[-1]["code"]).startswith(str(root / "versions" / "9.9.9"))
    fetching = [e for e in tower.events() if e["event"] == "upgrade-fetching"]
    assert fetching[-1]["source"] == f"s3://{BUCKET}/mockfleet-9.9.9.zip"
    assert not (root / "upgrade").exists()

    # None restarted: same PIDs, still the tower's own children, adopted as such.
    assert pids(root) == before
    children = {p.pid for p in psutil.Process(tower.pid).children()}
    assert set(before.values()) <= children
    adopted = [e for e in tower.events() if e["event"] == "adopted"]
    assert {e["mock"] for e in adopted} == set(before) and all(e["child"] for e in adopted)
    status = tower.status()
    assert status["version"] == "9.9.9" and status["pid"] == tower.pid
    assert status["mocks"]["running"] == MOCKS and not exits(tower.events())

    # Still reaped with the real cause: a kill -9 is seen as that signal.
    victim = ids[17]
    os.kill(before[victim], signal.SIGKILL)
    (killed,) = wait_for(lambda: exits(tower.events()), 30)
    assert killed["mock"] == victim and killed["signal"] == signal.SIGKILL
    assert killed["reason"] == "crashed" and killed["restart"] is False
    # Stops still work.
    stopped = ids[:5]
    for mock_id in stopped:
        write_stop(root, mock_id)
    wait_for(lambda: len(exits(tower.events())) == 6, 30)
    for e in exits(tower.events())[1:]:
        assert e["mock"] in stopped and e["reason"] == "stopped"
        assert e.get("exit_code") == 0 or e.get("signal") == signal.SIGTERM

    # A wrong checksum: rejected with the reason, the running version stays.
    client.upload_file(str(artifact), BUCKET, "mockfleet-9.9.10.zip")
    write_upgrade(root, "9.9.10", f"s3://{BUCKET}/mockfleet-9.9.10.zip", "0" * 64, s3.endpoint_url)
    wait_for(lambda: any(e["event"] == "upgrade-failed" for e in tower.events()), 60, 0.1)
    (failed,) = [e for e in tower.events() if e["event"] == "upgrade-failed"]
    assert failed["version"] == "9.9.10" and "sha256 mismatch" in failed["reason"]
    (reason,) = (root / "rejected").glob("upgrade.*.reason")
    assert "sha256 mismatch" in json.loads(reason.read_text())["reason"]
    # A missing object is refused the same way, naming the source.
    write_upgrade(root, "9.9.11", f"s3://{BUCKET}/nope.zip", "1" * 64, s3.endpoint_url)
    wait_for(lambda: sum(e["event"] == "upgrade-failed" for e in tower.events()) == 2, 60, 0.1)
    missing = [e for e in tower.events() if e["event"] == "upgrade-failed"][-1]
    assert f"cannot fetch s3://{BUCKET}/nope.zip" in missing["reason"]
    assert not (root / "versions" / "9.9.10").exists()
    assert not (root / "versions" / "9.9.11").exists()
    assert len([e for e in tower.events() if e["event"] == "tower-started"]) == len(started)
    status = tower.status()
    assert status["version"] == "9.9.9" and status["pid"] == tower.pid
    assert status["mocks"]["running"] == MOCKS - 6
    survivors = {k: v for k, v in before.items() if k != victim and k not in stopped}
    assert pids(root) == survivors

    assert tower.stop() == 0
    done = exits(tower.events())
    assert sorted(e["mock"] for e in done) == ids  # every mock reaped exactly once
    assert os.listdir(root / "pids") == []
