"""``make_sink``: the one entry point that turns a lot's sink spec into a Sink.

Concrete sinks are imported on first use, so a device that writes to stdout
never imports paho or http.client (the preloading parent imports them all once,
and forked devices share those pages).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mockfleet.mock.sinks.base import FatalSinkError, Sink
from mockfleet.mock.sinks.hosts import literal_family

if TYPE_CHECKING:
    from mockfleet.mock import lot

    SinkSpec = lot.StdoutSink | lot.FileSink | lot.HttpSink | lot.MqttSink

#: sink type -> (module, class) of its implementation
SINK_CLASSES: dict[str, tuple[str, str]] = {
    "stdout": ("mockfleet.mock.sinks.stdout", "StdoutSink"),
    "file": ("mockfleet.mock.sinks.file", "FileSink"),
    "http": ("mockfleet.mock.sinks.http", "HttpSink"),
    "mqtt": ("mockfleet.mock.sinks.mqtt", "MqttSink"),
}


def sink_class(kind: str) -> type[Sink]:
    """The implementation class for a sink ``type`` (imports its module)."""
    module, name = SINK_CLASSES[kind]
    cls: type[Sink] = getattr(importlib.import_module(module), name)
    return cls


def make_sink(spec: SinkSpec, names: Mapping[str, Any]) -> Sink:
    """A closed sink for one device. ``names`` renders the templates in url,
    path, topic, clientId, commandTopic and the will topic: ``id``, ``index``,
    ``lot`` plus the lot's constants and the device's variables.

    Raises FatalSinkError when a template uses a name that is not given.
    """
    cls = sink_class(spec.type)
    return cls(spec, names)  # type: ignore[call-arg]


def preload_sink(spec: SinkSpec) -> None:
    """Do before forking what every device of a lot would otherwise repeat:
    import the sink's module and build its TLS context (cached by spec).

    A broken TLS setting is left for each device to report at ``open`` (with
    the device's name in the log), so preloading never fails for it.
    """
    sink_class(spec.type)
    if needs_name_lookup(spec):
        # socket.getaddrinfo encodes a host name with the idna codec, which
        # imports encodings.idna, stringprep and unicodedata on first use: once
        # here rather than in every device. A lot that connects to an address
        # never needs them, and its devices are forked without them (an
        # extension module is five mappings more in every mock).
        "localhost".encode("idna")
    tls = getattr(spec, "tls", None)
    if tls is not None and (spec.type == "mqtt" or getattr(spec, "url", "").startswith("https:")):
        import ssl

        from mockfleet.mock.sinks.tls import ssl_context

        with contextlib.suppress(FatalSinkError):
            ssl_context(tls, ssl.Purpose.SERVER_AUTH)


def needs_name_lookup(spec: SinkSpec) -> bool:
    """Whether the sink connects to a host name (resolved by getaddrinfo),
    rather than to an IP address or nowhere (stdout, file). A host given as a
    template counts as a name."""
    if spec.type == "http":
        from mockfleet.mock.sinks.http_wire import split_url

        try:
            host = split_url(spec.url).host
        except ValueError:
            return True  # reported by each device; assume the worst here
    elif spec.type == "mqtt":
        host = spec.host
    else:
        return False
    return literal_family(host) is None
