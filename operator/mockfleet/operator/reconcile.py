"""Bringing one lot's children and status in line with its spec.

Called by the kopf handlers (on create/update/resume and from a timer); all
Kubernetes calls go through :class:`~mockfleet.operator.kube.Kube`, all
decisions are in the pure modules (assignment, builders, nodes, status).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from mockfleet.mock.lot import LotError, MockLot, parse_lot
from mockfleet.operator.assignment import Assignment, assign
from mockfleet.operator.builders import build_plan_configmap, build_tower_daemonset, read_plan
from mockfleet.operator.kube import Kube, KubeError, fetch_json
from mockfleet.operator.names import plan_configmap_name, selector_string, tower_selector
from mockfleet.operator.nodes import eligible_nodes
from mockfleet.operator.reportcache import ReportCache
from mockfleet.operator.settings import OperatorSettings
from mockfleet.operator.status import (
    INVALID,
    TowerReport,
    build_status,
    flips,
    get_condition,
    invalid_status,
    now_iso,
    reason_changes,
)
from mockfleet.operator.towerpods import (
    is_running,
    plan_annotation_patch,
    stale_plan_pods,
    status_port,
)

#: The towers' last good reports, for the whole operator process (see reportcache).
RECENT_REPORTS = ReportCache()

#: Called for every Kubernetes Event to post: (type, reason, message).
EventSink = Callable[[str, str, str], None]


class LotLocks:
    """One lock per lot: its reconciliations (lot handlers, timer, node watch) take turns.

    Each computes the assignment from the stored plan and writes a new one; two
    at once could write a plan from an older spec last.
    """

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def of(self, namespace: str, name: str) -> asyncio.Lock:
        """The lock of one lot (created on first use)."""
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted lot's lock (an unheld one; a holder keeps its reference)."""
        lock = self._locks.get((namespace, name))
        if lock is not None and not lock.locked():
            del self._locks[namespace, name]


@dataclass
class Outcome:
    """What one reconciliation did (for logs and tests)."""

    lot: MockLot | None
    status: dict[str, Any]
    children: dict[str, str] = field(default_factory=dict)
    assignment: Assignment = field(default_factory=dict)


def lot_source(body: Mapping[str, Any]) -> str:
    """``namespace/name`` of a lot, for messages."""
    meta = body.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def lot_manifest(body: Mapping[str, Any]) -> dict[str, Any]:
    """The user's part of the object (kopf bodies are read-only views)."""
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": dict(body.get("metadata") or {}),
        "spec": dict(body.get("spec") or {}),
    }


async def tower_reports(
    session: aiohttp.ClientSession,
    pods: Sequence[Mapping[str, Any]],
    lot: str,
    port: int,
    timeout: float,
) -> list[TowerReport]:
    """GET /status from every running tower pod, concurrently; failures become reports too.

    ``port`` is the towers' port unless a pod names its own (see :func:`status_port`).
    """

    async def one(pod: Mapping[str, Any]) -> TowerReport:
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        name = str((pod.get("metadata") or {}).get("name") or "")
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            return TowerReport(node, name, None, "no pod IP yet")
        try:
            url = f"http://{ip}:{status_port(pod, port)}/status"
            data = await fetch_json(session, url, timeout)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return TowerReport(node, name, None, f"{type(exc).__name__}: {exc}")
        stats = (data.get("lots") or {}).get(lot) if isinstance(data, dict) else None
        return TowerReport(node, name, stats if isinstance(stats, dict) else {})

    return list(await asyncio.gather(*(one(p) for p in pods)))


async def reconcile(
    *,
    body: Mapping[str, Any],
    kube: Kube,
    settings: OperatorSettings,
    adopt: Callable[[list[dict[str, Any]]], None],
    post_event: EventSink,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    session: aiohttp.ClientSession | None = None,
) -> Outcome:
    """Validate, assign, apply the plan ConfigMap and DaemonSet, and compute the status.

    Returns the new status in :attr:`Outcome.status`; the caller writes it.
    ``session`` (for tower /status calls) is given by the periodic refresh only.
    """
    meta = body.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    generation = meta.get("generation")
    old_conditions = list((body.get("status") or {}).get("conditions") or [])
    now = now_iso()

    try:
        lot = parse_lot(lot_manifest(body), lot_source(body))
    except LotError as exc:
        message = "; ".join(exc.problems)
        previous = get_condition(old_conditions, INVALID)
        if not (
            previous and previous.get("status") == "True" and previous.get("message") == message
        ):
            post_event("Warning", "InvalidSpec", message[:1000])
            logger.warning("lot=%s invalid spec: %s", lot_source(body), message)
        return Outcome(None, invalid_status(old_conditions, message, generation, now))

    nodes = eligible_nodes(await kube.list("v1", "nodes"), lot)
    current_cm = await kube.get("v1", "configmaps", namespace, plan_configmap_name(lot.name))
    assignment = assign(
        lot.spec.devices, nodes, read_plan(current_cm or {}), lot.spec.tower.maxDevicesPerTower
    )
    children = [
        build_plan_configmap(lot, assignment, generation),
        build_tower_daemonset(lot, settings),
    ]
    adopt(children)
    done: dict[str, str] = {}
    plan_version = ""
    for child in children:
        action, stored = await kube.apply(child, namespace)
        done[f"{child['kind']}/{child['metadata']['name']}"] = action
        if child["kind"] == "ConfigMap":
            plan_version = str((stored.get("metadata") or {}).get("resourceVersion") or "")
        if action != "unchanged":
            logger.info(
                "lot=%s %s %s", lot.name, action, f"{child['kind']}/{child['metadata']['name']}"
            )

    selector = tower_selector(lot.name)
    pods = await kube.list("v1", "pods", namespace, selector_string(selector))
    if plan_version:
        await touch_tower_pods(kube, namespace, pods, plan_version, lot.name, logger)
    reports: list[TowerReport] = []
    if session is not None:
        running = [p for p in pods if is_running(p)]
        reports = await tower_reports(
            session, running, lot.name, settings.tower_port, settings.status_timeout
        )
        reports = RECENT_REPORTS.settle(lot_source(body), reports, time.monotonic())
    status = build_status(
        devices=lot.spec.devices,
        paused=lot.spec.paused,
        assignment=assignment,
        reports=reports,
        conditions=old_conditions,
        generation=generation,
        selector=selector_string(selector),
        now=now,
        version=lot.spec.version,
    )
    news = [
        cond
        for cond in flips(old_conditions, status["conditions"])
        # a valid new lot is not news
        if not (cond["type"] == INVALID and cond["status"] == "False" and not old_conditions)
    ]
    # Same status, new reason: news only when it turned bad (a rollout in
    # progress that failed stays Upgraded=False, now for UpgradeFailed).
    news += [c for c in reason_changes(old_conditions, status["conditions"]) if _is_bad(c)]
    for cond in news:
        kind = "Warning" if _is_bad(cond) else "Normal"
        post_event(kind, f"{cond['type']}{cond['status']}", cond.get("message") or cond["reason"])
    return Outcome(lot, status, done, assignment)


async def touch_tower_pods(
    kube: Kube,
    namespace: str,
    pods: Sequence[Mapping[str, Any]],
    plan_version: str,
    lot: str,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> list[str]:
    """Record the plan version on tower pods that lack it, so their kubelets resync now.

    A failed patch is logged, not raised: towers still get the plan at the
    kubelet's next periodic sync, and the next reconciliation retries.
    Returns the names of the pods patched.
    """
    touched = []
    for name in stale_plan_pods(pods, plan_version):
        try:
            await kube.patch("v1", "pods", namespace, name, plan_annotation_patch(plan_version))
        except KubeError as exc:
            logger.warning("lot=%s pod=%s cannot note the plan version: %s", lot, name, exc)
            continue
        touched.append(name)
    if touched:
        logger.info("lot=%s plan=%s noted on pods %s", lot, plan_version, ", ".join(touched))
    return touched


def _is_bad(cond: Mapping[str, Any]) -> bool:
    bad_when_true = {"Degraded", "Invalid"}
    if cond["type"] in bad_when_true:
        return bool(cond["status"] == "True")
    return cond["status"] == "False" and cond.get("reason") not in {
        "Starting",
        "InProgress",
        "Paused",
    }


def write_status(patch_status: MutableMapping[str, Any], status: Mapping[str, Any]) -> None:
    """Copy a computed status into kopf's patch (merge-patch semantics)."""
    for key, value in status.items():
        patch_status[key] = value


def is_transient(exc: BaseException) -> bool:
    """API errors worth a retry (server trouble, conflicts), as opposed to our own bugs."""
    return isinstance(exc, KubeError) and (
        exc.status == 0 or exc.status in {409, 429} or exc.status >= 500
    )
