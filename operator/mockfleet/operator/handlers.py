"""kopf handlers for MockLot: thin wiring around :mod:`mockfleet.operator.reconcile`.

Importing this module registers the handlers with kopf's default registry
(``mockfleet operator`` and ``kopf run -m mockfleet.operator.handlers`` do).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import aiohttp
import kopf

from mockfleet.mock.lot import API_GROUP, API_VERSION
from mockfleet.operator.crd import PLURAL
from mockfleet.operator.kube import Kube
from mockfleet.operator.reconcile import is_transient, reconcile, write_status
from mockfleet.operator.settings import OperatorSettings

#: Seconds between status refreshes; read at import because kopf fixes timers then.
STATUS_INTERVAL = float(os.environ.get("MOCKFLEET_STATUS_INTERVAL", "15") or 15)
RETRY_DELAY = 10.0


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keep kopf's bookkeeping under our API group; open the API and tower clients."""
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    # Only warnings from kopf itself become Events; ours are posted explicitly.
    settings.posting.level = logging.WARNING
    memo.settings = OperatorSettings.from_env()
    memo.kube = Kube.from_environment()
    memo.towers = aiohttp.ClientSession()


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    """Close the HTTP sessions."""
    await memo.kube.close()
    await memo.towers.close()


async def _run(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, towers: bool
) -> None:
    def adopt(children: list[dict[str, Any]]) -> None:
        kopf.adopt(children, owner=body)

    def post_event(kind: str, reason: str, message: str) -> None:
        kopf.event(body, type=kind, reason=reason, message=message)

    try:
        outcome = await reconcile(
            body=body,
            kube=memo.kube,
            settings=memo.settings,
            adopt=adopt,
            post_event=post_event,
            logger=logger,
            session=memo.towers if towers else None,
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
    """Validate the lot and (re)apply its plan and towers."""
    await _run(body, patch, memo, logger, towers=False)


@kopf.timer(API_GROUP, API_VERSION, PLURAL, interval=STATUS_INTERVAL, initial_delay=1.0)
async def lot_refresh(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    """Follow node changes and aggregate the towers' /status into .status."""
    await _run(body, patch, memo, logger, towers=True)
