"""A lot's ``.status``: counts summed over towers, and conditions (pure).

Conditions follow the Kubernetes convention: a list keyed by ``type``, each
with ``status`` "True"/"False"/"Unknown", a CamelCase ``reason``, a human
``message`` and ``lastTransitionTime``, which changes only when ``status``
flips (so ``kubectl wait`` and dashboards see real transitions, not churn).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mockfleet.operator.assignment import Range, assigned_count, count, unassigned

READY = "Ready"
SUCCEEDED = "Succeeded"
TOWERS_READY = "TowersReady"
DEVICES_ASSIGNED = "DevicesAssigned"
DEGRADED = "Degraded"
UPGRADED = "Upgraded"
INVALID = "Invalid"
CONDITION_TYPES = (READY, SUCCEEDED, TOWERS_READY, DEVICES_ASSIGNED, DEGRADED, UPGRADED, INVALID)

#: Counters a tower reports per lot, and the status field each one sums into.
COUNTERS = {"running": "running", "failed": "failed", "succeeded": "succeeded", "sent": "messages"}


def now_iso() -> str:
    """The current time as Kubernetes writes it (RFC 3339, seconds, Z)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _flag(value: bool | None) -> str:
    return "Unknown" if value is None else ("True" if value else "False")


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    now: str,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """A copy of ``conditions`` with ``type_`` set; its transition time kept unless it flips."""
    out = [dict(c) for c in conditions if c.get("type") != type_]
    old = next((c for c in conditions if c.get("type") == type_), None)
    flag = _flag(status)
    since = old.get("lastTransitionTime") if old and old.get("status") == flag else None
    cond: dict[str, Any] = {
        "type": type_,
        "status": flag,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or now,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    out.append(cond)
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    return sorted(out, key=lambda c: (order.get(c["type"], len(order)), c["type"]))


def get_condition(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    """The condition of that type, if present."""
    return next((c for c in conditions if c.get("type") == type_), None)


def flips(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Conditions in ``new`` whose status differs from ``old`` (for Events)."""
    changed = []
    for cond in new:
        before = get_condition(old, cond["type"])
        if before is None or before.get("status") != cond.get("status"):
            changed.append(cond)
    return changed


def reason_changes(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Conditions in ``new`` with the same status as in ``old`` but another reason
    (e.g. Upgraded False: InProgress -> UpgradeFailed), for Events a flip alone misses."""
    changed = []
    for cond in new:
        before = get_condition(old, cond["type"])
        if (
            before is not None
            and before.get("status") == cond.get("status")
            and before.get("reason") != cond.get("reason")
        ):
            changed.append(cond)
    return changed


@dataclass(frozen=True)
class TowerReport:
    """One tower's answer for one lot; ``stats`` is None when it could not be read."""

    node: str
    pod: str
    stats: Mapping[str, Any] | None
    error: str | None = None


def sum_counters(reports: Iterable[TowerReport]) -> dict[str, int]:
    """Counts summed over the towers that answered."""
    totals = dict.fromkeys(COUNTERS.values(), 0)
    for report in reports:
        if report.stats is None:
            continue
        for key, field in COUNTERS.items():
            value = report.stats.get(key, 0)
            if isinstance(value, int | float) and not isinstance(value, bool):
                totals[field] += int(value)
    return totals


def tower_versions(reports: Iterable[TowerReport]) -> list[dict[str, Any]]:
    """How many answering towers run each version: ``[{"version", "towers"}]``, by version.

    A list, not a map: the status is written as a merge patch, which would
    keep a version no tower runs any more as a stale key of a map.
    """
    counts: dict[str, int] = {}
    for report in reports:
        version = (report.stats or {}).get("tower_version")
        if isinstance(version, str) and version:
            counts[version] = counts.get(version, 0) + 1
    return [{"version": v, "towers": n} for v, n in sorted(counts.items())]


@dataclass(frozen=True)
class UpgradeFailure:
    """Towers that refused one version for one reason."""

    version: str
    reason: str
    nodes: tuple[str, ...]


def upgrade_failures(
    reports: Iterable[TowerReport], version: str | None = None
) -> list[UpgradeFailure]:
    """The failed upgrades the towers report, grouped by (version, reason).

    With ``version`` (the lot's ``spec.version``) only failures to reach that
    version count: one for a version the spec no longer asks for is history.
    """
    nodes: dict[tuple[str, str], list[str]] = {}
    for report in reports:
        error = (report.stats or {}).get("upgrade_error")
        if not isinstance(error, Mapping):
            continue
        wanted = str(error.get("version") or "")
        if version is not None and wanted != version:
            continue
        reason = str(error.get("reason") or "unknown reason")
        nodes.setdefault((wanted, reason), []).append(report.node or report.pod)
    return [
        UpgradeFailure(v, reason, tuple(sorted(where)))
        for (v, reason), where in sorted(nodes.items())
    ]


def upgrade_problem(failures: Sequence[UpgradeFailure]) -> str:
    """One message for all failed upgrades (for the Degraded condition and its Event)."""
    parts = []
    for failure in failures:
        towers = "tower" if len(failure.nodes) == 1 else "towers"
        target = f"upgrade to {failure.version}" if failure.version else "upgrade"
        where = f"{len(failure.nodes)} {towers} ({_listing(list(failure.nodes))})"
        parts.append(f"{target} failed on {where}: {failure.reason}")
    return "; ".join(parts)


def upgrade_state(
    versions: Sequence[Mapping[str, Any]],
    failures: Sequence[UpgradeFailure],
    version: str | None = None,
) -> tuple[bool | None, str, str]:
    """The ``Upgraded`` condition as (status, reason, message).

    * False, ``UpgradeFailed``: a tower refused an upgrade (it runs on, on its version);
    * False, ``InProgress``: the towers run different versions, or (with
      ``version``, the lot's ``spec.version``) not yet that one;
    * True, ``OneVersion``: every answering tower runs the same version;
    * Unknown, ``NoTowerReports``: no tower said which version it runs.

    Its own condition rather than only a ``Degraded`` reason: a flip posts an
    Event, and ``Degraded`` may already be True for something else.
    """
    if failures:
        return False, "UpgradeFailed", upgrade_problem(failures)
    if not versions:
        return None, "NoTowerReports", "no tower reported its version"
    running = ", ".join(f"{v['version']} on {v['towers']}" for v in versions)
    total = sum(int(v["towers"]) for v in versions)
    if version is not None:
        on_it = sum(int(v["towers"]) for v in versions if v["version"] == version)
        if on_it < total:
            return False, "InProgress", f"{on_it} of {total} towers on {version} ({running})"
    if len(versions) > 1:
        return False, "InProgress", f"towers run different versions: {running}"
    return True, "OneVersion", f"{total} towers on {versions[0]['version']}"


def _listing(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def build_status(
    *,
    devices: int,
    paused: bool,
    assignment: Mapping[str, Sequence[Range]],
    reports: Sequence[TowerReport],
    conditions: Sequence[Mapping[str, Any]],
    generation: int | None,
    selector: str,
    now: str,
    version: str | None = None,
) -> dict[str, Any]:
    """The full ``.status`` of a valid lot from its assignment and the towers' reports.

    ``versions`` counts the towers per version they run (a rollout shows as two
    entries) and the ``Upgraded`` condition sums it up (see :func:`upgrade_state`;
    ``version`` is the lot's ``spec.version`` when the caller knows it). A
    tower that refused an upgrade also makes the lot ``Degraded`` (reason
    ``UpgradeFailed``), but not un-Ready: its devices run on, on its version.
    """
    totals = sum_counters(reports)
    missing_ranges = unassigned(devices, assignment)
    n_unassigned = count(missing_ranges)
    n_assigned = assigned_count(assignment)
    expected = sorted(node for node, ranges in assignment.items() if ranges)
    answering = {r.node for r in reports if r.stats is not None}
    silent = [node for node in expected if node not in answering]

    conds = set_condition(conditions, INVALID, False, "Valid", "the spec is valid", now, generation)
    if n_unassigned == 0:
        msg = f"{n_assigned} devices on {len(expected)} towers"
        conds = set_condition(conds, DEVICES_ASSIGNED, True, "AllAssigned", msg, now, generation)
    else:
        reason = "NoEligibleNodes" if not assignment else "CapacityExceeded"
        msg = f"{n_unassigned} of {devices} devices have no tower" + (
            "" if assignment else " (no ready node matches the lot's nodeSelector and tolerations)"
        )
        conds = set_condition(conds, DEVICES_ASSIGNED, False, reason, msg, now, generation)
    if silent:
        msg = f"no status from the towers on {_listing(silent)}"
        conds = set_condition(
            conds, TOWERS_READY, False, "TowersNotReporting", msg, now, generation
        )
    else:
        msg = f"{len(expected)} towers reporting"
        conds = set_condition(conds, TOWERS_READY, True, "AllReporting", msg, now, generation)

    problems: list[tuple[str, str]] = []
    if totals["failed"]:
        problems.append(("DevicesFailed", f"{totals['failed']} devices failed"))
    if n_unassigned:
        problems.append(("DevicesUnassigned", f"{n_unassigned} devices unassigned"))
    if silent:
        problems.append(("TowersNotReporting", f"{len(silent)} towers not reporting"))
    # Not a reason to be un-Ready: the devices run on, on the towers' current version.
    failures = upgrade_failures(reports, version)
    degraded = problems + ([("UpgradeFailed", upgrade_problem(failures))] if failures else [])
    if degraded:
        reason = degraded[0][0]
        msg = "; ".join(p[1] for p in degraded)
        conds = set_condition(conds, DEGRADED, True, reason, msg, now, generation)
    else:
        conds = set_condition(conds, DEGRADED, False, "AsExpected", "", now, generation)

    versions = tower_versions(reports)
    up_to_date, reason, msg = upgrade_state(versions, failures, version)
    conds = set_condition(conds, UPGRADED, up_to_date, reason, msg, now, generation)

    done = totals["succeeded"]
    up = totals["running"] + done
    if paused:
        conds = set_condition(conds, READY, False, "Paused", "spec.paused is true", now, generation)
    elif problems:
        conds = set_condition(conds, READY, False, problems[0][0], problems[0][1], now, generation)
    elif up < devices:
        msg = f"{up} of {devices} devices running or done"
        conds = set_condition(conds, READY, False, "Starting", msg, now, generation)
    else:
        msg = f"{totals['running']} running, {done} succeeded"
        conds = set_condition(conds, READY, True, "Running", msg, now, generation)
    if devices > 0 and done >= devices:
        msg = f"all {devices} devices finished"
        conds = set_condition(conds, SUCCEEDED, True, "AllSucceeded", msg, now, generation)
    else:
        msg = f"{done} of {devices} devices finished"
        conds = set_condition(conds, SUCCEEDED, False, "InProgress", msg, now, generation)

    return {
        "observedGeneration": generation,
        "desired": devices,
        "assigned": n_assigned,
        "unassigned": n_unassigned,
        "towers": len(answering),
        "versions": versions,
        "selector": selector,
        **totals,
        "conditions": conds,
    }


def invalid_status(
    conditions: Sequence[Mapping[str, Any]], message: str, generation: int | None, now: str
) -> dict[str, Any]:
    """The status patch for a spec pydantic rejects (the last valid plan keeps running)."""
    conds = set_condition(conditions, INVALID, True, "InvalidSpec", message, now, generation)
    conds = set_condition(
        conds, READY, False, "InvalidSpec", "the spec is invalid", now, generation
    )
    return {"observedGeneration": generation, "conditions": conds}
