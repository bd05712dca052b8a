"""Tower-pod facts the operator reads (status port) and writes (plan annotation)."""

from __future__ import annotations

from typing import Any

import pytest

from mockfleet.operator.towerpods import (
    PLAN_ANNOTATION,
    STATUS_PORT_ANNOTATION,
    is_running,
    plan_annotation_patch,
    stale_plan_pods,
    status_port,
)


def pod(
    name: str = "t-1",
    annotations: dict[str, str] | None = None,
    phase: str = "Running",
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "annotations": annotations or {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase}}


def test_status_port_defaults_to_the_operator_setting() -> None:
    assert status_port(pod(), 8080) == 8080
    assert status_port({}, 8080) == 8080


def test_status_port_annotation_wins_when_valid() -> None:
    assert status_port(pod(annotations={STATUS_PORT_ANNOTATION: "41234"}), 8080) == 41234


@pytest.mark.parametrize("bad", ["", "http", "0", "70000", "-1", "80.5"])
def test_a_bad_status_port_annotation_is_ignored(bad: str) -> None:
    assert status_port(pod(annotations={STATUS_PORT_ANNOTATION: bad}), 8080) == 8080


def test_only_running_pods_that_are_not_terminating_are_asked() -> None:
    assert is_running(pod())
    assert not is_running(pod(phase="Pending"))
    assert not is_running(pod(deleting=True))


def test_stale_plan_pods_are_those_without_the_current_version() -> None:
    pods = [
        pod("t-b"),
        pod("t-a", {PLAN_ANNOTATION: "41"}),
        pod("t-c", {PLAN_ANNOTATION: "42"}),
        pod("t-d", deleting=True),
    ]
    assert stale_plan_pods(pods, "42") == ["t-a", "t-b"]
    assert stale_plan_pods(pods[2:], "42") == []


def test_the_patch_touches_only_the_annotation() -> None:
    assert plan_annotation_patch("7") == {"metadata": {"annotations": {PLAN_ANNOTATION: "7"}}}
