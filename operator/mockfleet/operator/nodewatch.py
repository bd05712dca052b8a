"""Prompt reassignment when nodes change: what the node watch remembers, and its pass.

kopf reports every Node event; most are status updates that change nothing
about where towers may run (heartbeats, images, allocatable). A
:class:`NodeTracker` keeps each node's :class:`~mockfleet.operator.nodes.NodeFacts`
and says which events change them; a debouncer then runs one
:class:`NodePass` per burst: every lot the operator serves whose eligible
nodes differ from the nodes of its plan is reconciled (devices move as
:mod:`mockfleet.operator.assignment` rules) and gets its status and Events,
as from the lot's own handlers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from mockfleet.mock.lot import API_GROUP, API_VERSION, LotError, MockLot, parse_lot
from mockfleet.operator.builders import build_event, read_plan
from mockfleet.operator.crd import PLURAL
from mockfleet.operator.kube import Kube, KubeError
from mockfleet.operator.names import plan_configmap_name
from mockfleet.operator.nodes import NodeFacts, eligible_nodes, node_facts
from mockfleet.operator.reconcile import LotLocks, lot_manifest, lot_source, reconcile
from mockfleet.operator.settings import OperatorSettings
from mockfleet.operator.status import now_iso

LOT_API = f"{API_GROUP}/{API_VERSION}"
DELETED = "DELETED"

#: Makes the function that adds owner references to a lot's children.
AdoptFor = Callable[[Mapping[str, Any]], Callable[[list[dict[str, Any]]], None]]


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class NodeTracker:
    """The eligibility facts of every node seen so far."""

    def __init__(self) -> None:
        self._facts: dict[str, NodeFacts] = {}

    def observe(self, event_type: str | None, node: Mapping[str, Any]) -> bool:
        """Record one watch event; True when it changes what matters for eligibility.

        ``event_type`` is kopf's: None while listing, else ADDED, MODIFIED or DELETED.
        A node seen for the first time counts as a change (after a re-list it
        may be one the operator missed).
        """
        name = _key(node)[1]
        if event_type == DELETED:
            self._facts.pop(name, None)
            return True
        facts = node_facts(node)
        if self._facts.get(name) == facts:
            return False
        self._facts[name] = facts
        return True


class LotRegistry:
    """The lots the operator serves, as kopf's own MockLot watch reports them.

    kopf knows the watched namespaces (possibly globs); following its events
    keeps the node pass to exactly those lots.
    """

    def __init__(self) -> None:
        self._lots: set[tuple[str, str]] = set()

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Record one MockLot watch event."""
        if event_type == DELETED:
            self._lots.discard(_key(body))
        else:
            self._lots.add(_key(body))

    def served(self) -> list[tuple[str, str]]:
        """(namespace, name) of every known lot, sorted."""
        return sorted(self._lots)


def plan_is_stale(
    lot: MockLot, nodes: Iterable[Mapping[str, Any]], plan: Mapping[str, Any]
) -> bool:
    """The lot's eligible nodes are not the nodes its plan ConfigMap assigns to."""
    return set(eligible_nodes(nodes, lot)) != set(read_plan(plan))


@dataclass
class NodePass:
    """One pass after node changes: reconcile the lots whose eligible nodes changed."""

    kube: Kube
    settings: OperatorSettings
    lots: LotRegistry
    locks: LotLocks
    adopt_for: AdoptFor
    logger: logging.Logger
    #: For the towers' /status, so the status written is as complete as the timer's.
    session: aiohttp.ClientSession | None = None
    #: Lots reconciled by the latest pass ("namespace/name"), for logs and tests.
    last: list[str] = field(default_factory=list)

    async def __call__(self) -> list[str]:
        """Run the pass; raises :class:`KubeError` (after trying every lot) if one failed."""
        nodes = await self.kube.list("v1", "nodes")
        moved: list[str] = []
        failed: list[str] = []
        for namespace, name in self.lots.served():
            try:
                if await self._one(namespace, name, nodes):
                    moved.append(f"{namespace}/{name}")
            except KubeError as exc:
                self.logger.warning("lot=%s/%s node change not applied: %s", namespace, name, exc)
                failed.append(f"{namespace}/{name}")
        self.last = moved
        if moved:
            self.logger.info("node change: reassigned lots %s", ", ".join(moved))
        if failed:
            raise KubeError(0, f"node change not applied to {', '.join(failed)}")
        return moved

    async def _one(self, namespace: str, name: str, nodes: list[dict[str, Any]]) -> bool:
        async with self.locks.of(namespace, name):
            # Read afresh under the lock: a spec change handled meanwhile is in it.
            body = await self.kube.get(LOT_API, PLURAL, namespace, name)
            if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
                return False
            try:
                lot = parse_lot(lot_manifest(body), lot_source(body))
            except LotError:
                return False  # its handlers report it; it keeps its last plan
            plan = await self.kube.get("v1", "configmaps", namespace, plan_configmap_name(lot.name))
            if plan is None or not plan_is_stale(lot, nodes, plan):
                return False  # no plan yet: the lot's create handler writes the first
            events: list[tuple[str, str, str]] = []
            outcome = await reconcile(
                body=body,
                kube=self.kube,
                settings=self.settings,
                adopt=self.adopt_for(body),
                post_event=lambda kind, reason, message: events.append((kind, reason, message)),
                logger=self.logger,
                session=self.session,
            )
            await self.kube.patch(
                LOT_API, PLURAL, namespace, name, {"status": outcome.status}, subresource="status"
            )
        for kind, reason, message in events:
            try:
                await self.kube.create(
                    "v1", "events", namespace, build_event(body, kind, reason, message, now_iso())
                )
            except KubeError as exc:  # an Event is news, not state: do not retry the pass
                self.logger.warning(
                    "lot=%s/%s cannot post event %s: %s", namespace, name, reason, exc
                )
        return True
