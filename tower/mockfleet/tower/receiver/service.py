"""``Receiver``: the HTTP server and MQTT subscriber around one ``Stats``.

Used in-process by ``mockfleet run`` (start, point the devices at
``http_url``, read ``stats``/``report()``, stop) and by ``mockfleet
receive``, which runs it alone in its own process for the best throughput.
The asyncio loop of the HTTP server runs in a background thread so callers
keep their own thread free; MQTT messages arrive on paho's thread. Both feed
the same ``Stats`` (it has its own lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from mockfleet.tower.receiver.commands import CommandHook
from mockfleet.tower.receiver.http_server import DEFAULT_MAX_BODY, HttpReceiver
from mockfleet.tower.receiver.mqtt_client import MqttConfig, MqttReceiver, MqttReceiverError
from mockfleet.tower.receiver.sequence import DEFAULT_WINDOW
from mockfleet.tower.receiver.stats import EnvelopeFields, Stats


class ReceiverStartError(Exception):
    """A listener could not bind or the broker could not be reached."""


@dataclass(frozen=True)
class Bound:
    """Where a started receiver listens."""

    http: tuple[str, int] | None
    mqtt: tuple[str, int] | None

    @property
    def http_url(self) -> str | None:
        if self.http is None:
            return None
        host, port = self.http
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"


class Receiver:
    """A verifying receiver: ``start()``, then ``stats`` / ``report()``, then ``stop()``.

    ``http`` is the (host, port) to listen on (port 0 picks a free one) or None;
    ``mqtt`` the broker and topics to subscribe to, or None.
    """

    def __init__(
        self,
        http: tuple[str, int] | None = ("127.0.0.1", 0),
        mqtt: MqttConfig | None = None,
        *,
        fields: EnvelopeFields | None = None,
        window: int = DEFAULT_WINDOW,
        commands: CommandHook | None = None,
        command_field: str = "command",
        ack_status: int = 200,
        max_body: int = DEFAULT_MAX_BODY,
        stats: Stats | None = None,
    ) -> None:
        if http is None and mqtt is None:
            raise ValueError("a receiver needs HTTP, MQTT or both")
        self.stats = stats or Stats(fields, window=window)
        self._http_addr = http
        self._mqtt_config = mqtt
        self.http: HttpReceiver | None = None
        if http is not None:
            self.http = HttpReceiver(
                self.stats,
                http[0],
                http[1],
                commands=commands,
                command_field=command_field,
                ack_status=ack_status,
                max_body=max_body,
                report=lambda per_device: self.report(per_device=per_device),
            )
        self.mqtt: MqttReceiver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.bound: Bound | None = None

    @property
    def http_url(self) -> str | None:
        """``http://host:port`` of the running HTTP listener."""
        return self.bound.http_url if self.bound else None

    def start(self, timeout: float = 10.0) -> Bound:
        """Bind / connect everything; return where it listens. Raises ReceiverStartError."""
        if self._thread is not None:
            raise RuntimeError("receiver already started")
        http_bound: tuple[str, int] | None = None
        if self.http is not None:
            loop = self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=loop.run_forever, name="mockfleet-receiver", daemon=True
            )
            self._thread.start()
            fut: Future[int] = asyncio.run_coroutine_threadsafe(self.http.start(), loop)
            try:
                port = fut.result(timeout)
            except OSError as exc:
                self._stop_loop()
                host, want = self._http_addr or ("", 0)
                raise ReceiverStartError(
                    f"cannot listen for HTTP on {host}:{want}: {exc.strerror or exc}"
                ) from None
            http_bound = (self.http.host, port)
        mqtt_bound: tuple[str, int] | None = None
        if self._mqtt_config is not None:
            self.mqtt = MqttReceiver(self.stats, self._mqtt_config)
            try:
                self.mqtt.start(timeout)
            except MqttReceiverError as exc:
                self.mqtt = None
                self._stop_loop()
                raise ReceiverStartError(str(exc)) from None
            mqtt_bound = (self._mqtt_config.host, self._mqtt_config.port)
        self.bound = Bound(http_bound, mqtt_bound)
        return self.bound

    def stop(self) -> None:
        """Stop listening and disconnect; the counters stay readable."""
        if self.mqtt is not None:
            self.mqtt.stop()
        self._stop_loop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self.http is not None and loop.is_running():
            # Shutting down anyway: the loop is stopped below whatever happens.
            with contextlib.suppress(TimeoutError, OSError, RuntimeError):
                asyncio.run_coroutine_threadsafe(self.http.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        self._loop = self._thread = None

    def report(self, *, per_device: bool = True) -> dict[str, Any]:
        """``Stats.snapshot`` plus what each listener saw (under ``http``/``mqtt``)."""
        out = self.stats.snapshot(per_device=per_device)
        out["http"] = self.http.counters.as_dict() if self.http is not None else None
        out["mqtt"] = self.mqtt.counters.as_dict() if self.mqtt is not None else None
        if per_device:
            out["per_device"] = out.pop("per_device")  # the long part goes last
        return out

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
