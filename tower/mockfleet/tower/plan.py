"""The plan a tower follows on Kubernetes, and the pure diff that turns it into triggers.

The operator publishes ``plan.json`` (see docs/kubernetes-plan.md)::

    {"generation": 7, "lot": "thermo", "version": "0.3.0", "paused": false,
     "devices": 15, "nodes": {"node-a": [[0, 10]], "node-b": [[10, 15]]},
     "upgrade": {"version": "0.3.0", "source": "s3://b/k.whl", "sha256": "..."}}

Ranges are half-open device-index intervals. Everything here is pure: parsing
with a reason for every problem, the set of devices a node should run, the
mock id of a device, and the level-triggered diff between what should run
and what runs. The I/O lives in :mod:`mockfleet.tower.planwatch`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from mockfleet.tower.triggers import (
    MAX_INDEX,
    TriggerError,
    UpgradeRequest,
    check_mock_id,
    parse_upgrade,
)

#: The fields plan.json may hold; anything else is a typo or a newer operator.
PLAN_FIELDS = frozenset({"generation", "lot", "version", "paused", "devices", "nodes", "upgrade"})


class PlanError(ValueError):
    """A plan that cannot be followed; the message names the field and the problem."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated plan.json."""

    lot: str
    devices: int
    nodes: Mapping[str, tuple[tuple[int, int], ...]]
    paused: bool = False
    generation: int | None = None
    version: str | None = None
    upgrade: UpgradeRequest | None = field(default=None)


def _int(value: Any, what: str, low: int = 0, high: int = MAX_INDEX + 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PlanError(f"{what} must be an integer in {low}..{high}, not {value!r}")
    return value


def _ranges(node: str, raw: Any, devices: int) -> tuple[tuple[int, int], ...]:
    where = f"nodes.{node}"
    if not isinstance(raw, list):
        raise PlanError(f"{where} must be a list of [start, end] ranges")
    out: list[tuple[int, int]] = []
    for i, pair in enumerate(raw):
        if not isinstance(pair, list) or len(pair) != 2:
            raise PlanError(f"{where}[{i}] must be a [start, end] pair")
        start = _int(pair[0], f"{where}[{i}] start", 0, devices)
        end = _int(pair[1], f"{where}[{i}] end", 0, devices)
        if end < start:
            raise PlanError(f"{where}[{i}] ends ({end}) before it starts ({start})")
        out.append((start, end))
    return tuple(out)


def parse_plan(obj: Any) -> Plan:
    """Validate a decoded plan.json; every problem is a :class:`PlanError`."""
    if not isinstance(obj, dict):
        raise PlanError("the plan must be a JSON object")
    unknown = set(obj) - PLAN_FIELDS
    if unknown:
        raise PlanError(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    lot = obj.get("lot")
    if not isinstance(lot, str) or not lot:
        raise PlanError("'lot' must be the lot's name")
    try:
        check_mock_id(lot)
    except TriggerError as exc:
        raise PlanError(f"'lot' is not a usable name: {exc}") from None
    devices = _int(obj.get("devices"), "'devices'")
    paused = obj.get("paused", False)
    if not isinstance(paused, bool):
        raise PlanError("'paused' must be true or false")
    generation = obj.get("generation")
    if generation is not None:
        generation = _int(generation, "'generation'", 0, 2**63)
    version = obj.get("version")
    if version is not None and not isinstance(version, str):
        raise PlanError("'version' must be a string or null")
    nodes_raw = obj.get("nodes", {})
    if not isinstance(nodes_raw, dict):
        raise PlanError("'nodes' must map node names to lists of ranges")
    nodes = {str(n): _ranges(str(n), r, devices) for n, r in nodes_raw.items()}
    upgrade = None
    if obj.get("upgrade") is not None:
        try:
            upgrade = parse_upgrade(json.dumps(obj["upgrade"]).encode())
        except TriggerError as exc:
            raise PlanError(f"upgrade: {exc}") from None
    return Plan(lot, devices, nodes, paused, generation, version, upgrade)


def desired_devices(plan: Plan | Mapping[str, Any], node: str) -> set[int]:
    """The device indexes ``node`` should run: its ranges, or nothing when paused.

    A raw mapping is validated first (:class:`PlanError` when it is not a plan).
    """
    if not isinstance(plan, Plan):
        plan = parse_plan(dict(plan))
    if plan.paused:
        return set()
    out: set[int] = set()
    for start, end in plan.nodes.get(node, ()):
        out.update(range(start, end))
    return out


def plan_mock_id(lot_name: str, index: int) -> str:
    """The mock id of device ``index`` of the lot: stable, and a safe trigger name."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_INDEX:
        raise PlanError(f"device index must be an integer in 0..{MAX_INDEX}, not {index!r}")
    return check_mock_id(f"{lot_name}-{index}")


def index_of(lot_name: str, mock_id: str) -> int | None:
    """The device index when ``mock_id`` is one of this lot's plan mock ids, else None.

    Only the canonical spelling counts (no sign, no leading zeros), so the
    mapping is one-to-one and lot ``a`` never claims lot ``a-1``'s mocks:
    ``a-1-5`` has ``1-5`` after ``a-``, which is not a number.
    """
    prefix = lot_name + "-"
    if not mock_id.startswith(prefix):
        return None
    rest = mock_id[len(prefix) :]
    if not rest.isascii() or not rest.isdigit() or (len(rest) > 1 and rest[0] == "0"):
        return None
    index = int(rest)
    return index if index <= MAX_INDEX else None


def indexes_of(lot_name: str, mock_ids: Iterable[str]) -> set[int]:
    """The device indexes among ``mock_ids`` that belong to the lot."""
    out: set[int] = set()
    for mock_id in mock_ids:
        index = index_of(lot_name, mock_id)
        if index is not None:
            out.add(index)
    return out


def diff(
    desired: Set[int],
    running: Set[int],
    pending_starts: Set[int],
    *,
    stopping: Set[int] = frozenset(),
    settled: Set[int] = frozenset(),
) -> tuple[list[int], list[int]]:
    """What to start (ascending) and what to stop (highest index first).

    ``stopping`` are managed mocks that already have a stop trigger: they are
    not asked again, and a desired one is started again only once it is gone.
    ``settled`` are desired devices that were started and then ended on their
    own (finished, or out of restarts): the tower's restart policy decided,
    and the plan does not overrule it.
    """
    managed = running | pending_starts
    to_start = sorted(desired - managed - settled)
    to_stop = sorted(managed - desired - stopping, reverse=True)
    return to_start, to_stop


def next_launched(
    launched: Set[int],
    desired: Set[int],
    running: Set[int],
    pending_starts: Set[int],
    stopping: Set[int],
    started: Iterable[int],
) -> set[int]:
    """The devices started under the current, uninterrupted desire.

    A device enters when it is started (or seen running/pending while desired
    and not being stopped) and leaves when the plan stops wanting it, so a
    device scaled away and back is started again, while one that ended on its
    own stays ended (it becomes ``settled``: launched, desired, not managed).
    """
    seen = (running | pending_starts) - stopping
    return (set(launched) | set(started) | (desired & seen)) & desired


def settled_devices(
    launched: Set[int], desired: Set[int], running: Set[int], pending_starts: Set[int]
) -> set[int]:
    """Desired devices that were launched and are neither running nor pending."""
    return set(launched & desired) - running - pending_starts


def to_ranges(indexes: Iterable[int]) -> list[list[int]]:
    """Compact half-open ranges of a set of indexes (for state files and logs)."""
    out: list[list[int]] = []
    for i in sorted(set(indexes)):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


def from_ranges(ranges: Any) -> set[int]:
    """The indexes of ranges written by :func:`to_ranges`; raise PlanError on garbage."""
    if not isinstance(ranges, list):
        raise PlanError("ranges must be a list")
    out: set[int] = set()
    for pair in ranges:
        if not isinstance(pair, list) or len(pair) != 2:
            raise PlanError("a range must be a [start, end] pair")
        start = _int(pair[0], "range start")
        end = _int(pair[1], "range end")
        out.update(range(start, end))
    return out
