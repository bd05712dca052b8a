"""kopf handlers for MockLot: thin wiring around :mod:`mockfleet.operator.reconcile`.

Importing this module registers the handlers with kopf's default registry
(``mockfleet operator`` and ``kopf run -m mockfleet.operator.handlers`` do).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, cast

import aiohttp
import kopf

from mockfleet.mock.lot import API_GROUP, API_VERSION
from mockfleet.operator.crd import PLURAL
from mockfleet.operator.debounce import Debouncer
from mockfleet.operator.kube import Kube
from mockfleet.operator.nodewatch import LotRegistry, NodePass, NodeTracker
from mockfleet.operator.reconcile import LotLocks, is_transient, reconcile, write_status
from mockfleet.operator.settings import OperatorSettings

#: Seconds between status refreshes; read at import because kopf fixes timers then.
STATUS_INTERVAL = float(os.environ.get("MOCKFLEET_STATUS_INTERVAL", "15") or 15)
RETRY_DELAY = 10.0
#: A node pass runs once a burst of node changes has been quiet this long (seconds)...
NODE_QUIET = 0.5
#: ...or this long after the burst's first change, whichever is sooner.
NODE_MAX_DELAY = 2.0


class _QuietWatchHandlers(logging.Filter):
    """Drops kopf's "Handler ... succeeded." for the watch-only handlers below: it would
    be one INFO line per status update of every node in the cluster."""

    QUIET = frozenset({"Handler 'node_event' succeeded.", "Handler 'lot_event' succeeded."})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.QUIET


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keep kopf's bookkeeping under our API group; open the API and tower clients;
    start the node watch's pass."""
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    # Only warnings from kopf itself become Events; ours are posted explicitly.
    settings.posting.level = logging.WARNING
    objects_log = logging.getLogger("kopf.objects")
    if not any(isinstance(f, _QuietWatchHandlers) for f in objects_log.filters):
        objects_log.addFilter(_QuietWatchHandlers())
    memo.settings = OperatorSettings.from_env()
    memo.kube = Kube.from_environment()
    memo.towers = aiohttp.ClientSession()
    memo.locks = LotLocks()
    memo.lots = LotRegistry()
    memo.nodes = NodeTracker()
    node_pass = NodePass(
        kube=memo.kube,
        settings=memo.settings,
        lots=memo.lots,
        locks=memo.locks,
        adopt_for=_adopt_for,
        logger=logging.getLogger("mockfleet.operator.nodewatch"),
        session=memo.towers,
    )
    memo.node_changes = Debouncer(
        node_pass,
        quiet=NODE_QUIET,
        max_delay=NODE_MAX_DELAY,
        retry=RETRY_DELAY,
        logger=node_pass.logger,
    )
    memo.node_changes.start()


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    """Stop the node pass; close the HTTP sessions."""
    await memo.node_changes.stop()
    await memo.kube.close()
    await memo.towers.close()


def _adopt_for(body: Mapping[str, Any]) -> Callable[[list[dict[str, Any]]], None]:
    owner = body if isinstance(body, kopf.Body) else kopf.Body(cast(kopf.RawBody, dict(body)))

    def adopt(children: list[dict[str, Any]]) -> None:
        kopf.adopt(children, owner=owner)

    return adopt


async def _run(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any) -> None:
    def post_event(kind: str, reason: str, message: str) -> None:
        kopf.event(body, type=kind, reason=reason, message=message)

    meta = body.get("metadata") or {}
    try:
        async with memo.locks.of(str(meta.get("namespace") or ""), str(meta.get("name") or "")):
            outcome = await reconcile(
                body=body,
                kube=memo.kube,
                settings=memo.settings,
                adopt=_adopt_for(body),
                post_event=post_event,
                logger=logger,
                session=memo.towers,
            )
    except Exception as exc:
        if is_transient(exc):
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY) from exc
        raise kopf.PermanentError(f"{type(exc).__name__}: {exc}") from exc
    write_status(patch.status, outcome.status)


@kopf.on.resume(API_GROUP, API_VERSION, PLURAL)
@kopf.on.create(API_GROUP, API_VERSION, PLURAL)
@kopf.on.update(API_GROUP, API_VERSION, PLURAL, field="spec")
async def lot_changed(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    """Validate the lot and (re)apply its plan and towers.

    The towers are asked for their status here too: a status built without
    their reports would call every tower silent and flap Ready, TowersReady
    and Degraded (with Events) on each spec change until the next timer pass.
    """
    await _run(body, patch, memo, logger)


@kopf.timer(API_GROUP, API_VERSION, PLURAL, interval=STATUS_INTERVAL, initial_delay=1.0)
async def lot_refresh(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    """Aggregate the towers' /status into .status (and catch any node change missed)."""
    await _run(body, patch, memo, logger)


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
async def lot_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keep the list of served lots for the node pass (no writes: only change handlers write)."""
    memo.lots.observe(type, body)
    if type == "DELETED":
        meta = body.get("metadata") or {}
        memo.locks.forget(str(meta.get("namespace") or ""), str(meta.get("name") or ""))


@kopf.on.event("", "v1", "nodes")
async def node_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A node changed: if its readiness, cordon, labels or taints did, plan a node pass."""
    if memo.nodes.observe(type, body):
        memo.node_changes.poke()
