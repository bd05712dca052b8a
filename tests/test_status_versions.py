"""Tower versions and failed upgrades in a lot's status (pure), the tower's
``/status`` body that carries them, and the failure record the upgrade keeps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mockfleet.operator.status import (
    TowerReport,
    UpgradeFailure,
    build_status,
    get_condition,
    tower_versions,
    upgrade_failures,
    upgrade_problem,
    upgrade_state,
)
from mockfleet.tower.status import status_document
from mockfleet.tower.triggers import UpgradeRequest, ensure_dirs
from mockfleet.tower.upgrade import (
    FAILURE_FILE,
    UpgradeError,
    build_artifact,
    clear_failure,
    install,
    last_failure,
    record_failure,
)

REPO = Path(__file__).resolve().parents[1]
BAD_SHA = "0" * 64


def _lot_entry(
    version: str, error: dict[str, str] | None = None, running: int = 5
) -> dict[str, Any]:
    return {"running": running, "tower_version": version, "upgrade_error": error}


def _status(reports: list[TowerReport], **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "devices": 10,
        "paused": False,
        "assignment": {"a": [(0, 5)], "b": [(5, 10)]},
        "reports": reports,
        "conditions": [],
        "generation": 3,
        "selector": "s",
        "now": "T",
    }
    args.update(kw)
    return build_status(**args)


def _cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    cond = get_condition(status["conditions"], type_)
    assert cond is not None, type_
    return dict(cond)


# --------------------------------------------------------------------------- operator: versions


def test_versions_count_towers_per_version_sorted() -> None:
    reports = [
        TowerReport("a", "p1", _lot_entry("2.0.0")),
        TowerReport("b", "p2", _lot_entry("1.0.0")),
        TowerReport("c", "p3", _lot_entry("2.0.0")),
    ]
    assert tower_versions(reports) == [
        {"version": "1.0.0", "towers": 1},
        {"version": "2.0.0", "towers": 2},
    ]


def test_versions_skip_silent_towers_and_reports_without_a_version() -> None:
    reports = [
        TowerReport("a", "p1", _lot_entry("1.0.0")),
        TowerReport("b", "p2", None, "timeout"),
        TowerReport("c", "p3", {"running": 3}),  # a tower from before versions were reported
        TowerReport("d", "p4", {"tower_version": 7}),  # garbage is not a version
    ]
    assert tower_versions(reports) == [{"version": "1.0.0", "towers": 1}]
    assert tower_versions([]) == []


def test_a_rollout_shows_in_the_status_and_does_not_degrade_the_lot() -> None:
    mid = _status(
        [TowerReport("a", "p1", _lot_entry("1.0.0")), TowerReport("b", "p2", _lot_entry("2.0.0"))]
    )
    assert mid["versions"] == [{"version": "1.0.0", "towers": 1}, {"version": "2.0.0", "towers": 1}]
    assert _cond(mid, "Ready")["status"] == "True"
    assert _cond(mid, "Degraded")["status"] == "False"
    upgraded = _cond(mid, "Upgraded")
    assert (upgraded["status"], upgraded["reason"]) == ("False", "InProgress")
    assert upgraded["message"] == "towers run different versions: 1.0.0 on 1, 2.0.0 on 1"
    done = _status(
        [TowerReport("a", "p1", _lot_entry("2.0.0")), TowerReport("b", "p2", _lot_entry("2.0.0"))]
    )
    assert done["versions"] == [{"version": "2.0.0", "towers": 2}]
    upgraded = _cond(done, "Upgraded")
    assert (upgraded["status"], upgraded["reason"]) == ("True", "OneVersion")
    assert upgraded["message"] == "2 towers on 2.0.0"


def test_upgraded_is_unknown_when_no_tower_says_its_version() -> None:
    status = _status([TowerReport("a", "p1", None, "timeout")])
    assert status["versions"] == []
    assert (_cond(status, "Upgraded")["status"], _cond(status, "Upgraded")["reason"]) == (
        "Unknown",
        "NoTowerReports",
    )


def test_upgrade_state_with_the_spec_version() -> None:
    one = [{"version": "1.0.0", "towers": 2}]
    # All towers agree, but not on what the spec asks for: the rollout has not begun.
    assert upgrade_state(one, [], "2.0.0") == (
        False,
        "InProgress",
        "0 of 2 towers on 2.0.0 (1.0.0 on 2)",
    )
    assert upgrade_state(one, [], "1.0.0") == (True, "OneVersion", "2 towers on 1.0.0")
    assert upgrade_state(one, []) == (True, "OneVersion", "2 towers on 1.0.0")
    failed = [UpgradeFailure("2.0.0", "sha256 mismatch", ("a",))]
    assert upgrade_state(one, failed, "2.0.0") == (
        False,
        "UpgradeFailed",
        "upgrade to 2.0.0 failed on 1 tower (a): sha256 mismatch",
    )


# --------------------------------------------------------------------------- operator: failures


SHA_MISMATCH = {"version": "2.0.1", "source": "/a.zip", "reason": "sha256 mismatch: expected 0"}


def test_failures_are_grouped_by_version_and_reason() -> None:
    other = {"version": "2.0.1", "source": "/a.zip", "reason": "cannot copy /a.zip: gone"}
    reports = [
        TowerReport("b", "p2", _lot_entry("2.0.0", SHA_MISMATCH)),
        TowerReport("a", "p1", _lot_entry("2.0.0", SHA_MISMATCH)),
        TowerReport("c", "p3", _lot_entry("2.0.0", other)),
        TowerReport("d", "p4", _lot_entry("2.0.0")),
        TowerReport("e", "p5", None, "timeout"),
    ]
    assert upgrade_failures(reports) == [
        UpgradeFailure("2.0.1", "cannot copy /a.zip: gone", ("c",)),
        UpgradeFailure("2.0.1", "sha256 mismatch: expected 0", ("a", "b")),
    ]


def test_failures_for_a_version_the_spec_no_longer_asks_for_are_ignored() -> None:
    reports = [TowerReport("a", "p1", _lot_entry("2.0.0", SHA_MISMATCH))]
    assert upgrade_failures(reports, "2.0.0") == []
    assert upgrade_failures(reports, "2.0.1") == [
        UpgradeFailure("2.0.1", SHA_MISMATCH["reason"], ("a",))
    ]
    # Without the spec's version every reported failure counts.
    assert len(upgrade_failures(reports)) == 1


def test_the_problem_message_names_version_towers_and_reason() -> None:
    msg = upgrade_problem(
        [
            UpgradeFailure("2.0.1", "sha256 mismatch", ("a", "b")),
            UpgradeFailure("", "unreadable record", ("c",)),
        ]
    )
    assert msg == (
        "upgrade to 2.0.1 failed on 2 towers (a, b): sha256 mismatch; "
        "upgrade failed on 1 tower (c): unreadable record"
    )


def test_a_failed_upgrade_degrades_the_lot_but_keeps_it_ready() -> None:
    reports = [
        TowerReport("a", "p1", _lot_entry("2.0.0", SHA_MISMATCH)),
        TowerReport("b", "p2", _lot_entry("2.0.0", SHA_MISMATCH)),
    ]
    status = _status(reports)
    degraded = _cond(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "UpgradeFailed")
    assert "upgrade to 2.0.1 failed on 2 towers (a, b): sha256 mismatch" in degraded["message"]
    assert _cond(status, "Ready")["status"] == "True"  # the devices run on, on 2.0.0
    assert status["versions"] == [{"version": "2.0.0", "towers": 2}]
    upgraded = _cond(status, "Upgraded")
    assert (upgraded["status"], upgraded["reason"]) == ("False", "UpgradeFailed")
    assert upgraded["message"] == degraded["message"]
    # The spec went back to the version the towers run: the failure is history.
    back = _status(reports, version="2.0.0")
    assert _cond(back, "Degraded")["status"] == "False"
    assert _cond(back, "Upgraded")["status"] == "True"


def test_other_problems_come_first_and_the_upgrade_failure_is_appended() -> None:
    reports = [
        TowerReport("a", "p1", {**_lot_entry("2.0.0", SHA_MISMATCH), "failed": 1, "running": 4}),
        TowerReport("b", "p2", _lot_entry("2.0.0")),
    ]
    status = _status(reports)
    degraded = _cond(status, "Degraded")
    assert degraded["reason"] == "DevicesFailed"
    assert degraded["message"].startswith("1 devices failed; upgrade to 2.0.1 failed on 1 tower")
    assert _cond(status, "Ready")["reason"] == "DevicesFailed"  # devices failing do un-Ready it
    # Degraded was already True: the Upgraded condition is what flips (and posts an Event).
    assert _cond(status, "Upgraded")["reason"] == "UpgradeFailed"


# --------------------------------------------------------------------------- tower: /status body


def test_status_document_repeats_version_and_error_in_every_lot() -> None:
    tower = {"version": "2.0.0", "pid": 7, "lots": {"x": {"mocks": 1}, "y": {"mocks": 2}}}
    doc = status_document(tower, SHA_MISMATCH)
    assert doc["upgrade_error"] == SHA_MISMATCH
    assert doc["pid"] == 7 and doc["version"] == "2.0.0"
    for name, mocks in (("x", 1), ("y", 2)):
        assert doc["lots"][name] == {
            "mocks": mocks,
            "tower_version": "2.0.0",
            "upgrade_error": SHA_MISMATCH,
        }
    assert tower["lots"] == {"x": {"mocks": 1}, "y": {"mocks": 2}}  # not modified
    clean = status_document(tower, None)
    assert clean["upgrade_error"] is None and clean["lots"]["x"]["upgrade_error"] is None


# --------------------------------------------------------------------------- tower: failure record


def test_failure_record_round_trip_and_clear(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert last_failure(root) is None
    record_failure(root, UpgradeRequest("3.0.0", "s3://b/k", BAD_SHA), "sha256 mismatch: x")
    assert last_failure(root) == {
        "version": "3.0.0",
        "source": "s3://b/k",
        "reason": "sha256 mismatch: x",
    }
    clear_failure(root)
    assert last_failure(root) is None
    clear_failure(root)  # nothing to clear is fine


def test_an_unreadable_failure_record_still_reports_a_failure(tmp_path: Path) -> None:
    (tmp_path / FAILURE_FILE).write_text("{not json")
    failure = last_failure(str(tmp_path))
    assert failure is not None and FAILURE_FILE in failure["reason"]
    (tmp_path / FAILURE_FILE).write_text("[1]")
    assert "not an object" in (last_failure(str(tmp_path)) or {})["reason"]


def test_install_records_a_failure_and_a_later_success_clears_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    ensure_dirs(root)
    artifact = tmp_path / "a.zip"
    sha = build_artifact(artifact, [str(REPO / "tower"), str(REPO / "mock")])
    with pytest.raises(UpgradeError, match="sha256 mismatch"):
        install(str(root), UpgradeRequest("5.0.0", str(artifact), BAD_SHA))
    failure = last_failure(str(root))
    assert failure is not None
    assert failure["version"] == "5.0.0" and "sha256 mismatch" in failure["reason"]
    assert json.loads((root / FAILURE_FILE).read_text())["source"] == str(artifact)

    site = install(str(root), UpgradeRequest("5.0.1", str(artifact), sha))
    assert Path(site) == root / "versions" / "5.0.1"
    assert last_failure(str(root)) is None


def test_reason_changes_are_same_status_other_reason() -> None:
    from mockfleet.operator.status import reason_changes

    old = [
        {"type": "Upgraded", "status": "False", "reason": "InProgress"},
        {"type": "Ready", "status": "True", "reason": "AllRunning"},
        {"type": "Degraded", "status": "False", "reason": "Healthy"},
    ]
    new = [
        {"type": "Upgraded", "status": "False", "reason": "UpgradeFailed"},
        {"type": "Ready", "status": "True", "reason": "AllRunning"},
        {"type": "Degraded", "status": "True", "reason": "UpgradeFailed"},  # a flip, not this
        {"type": "Succeeded", "status": "False", "reason": "Running"},  # new: a flip
    ]
    assert [c["type"] for c in reason_changes(old, new)] == ["Upgraded"]
