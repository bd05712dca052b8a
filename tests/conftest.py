"""Shared fixtures. Each helper area keeps its fixtures in its own section;
the machinery lives in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.certs import TlsFiles, make_test_certs
from support.recording_http import RecordingServer, running_server
from support.sink_broker import SinkBroker, sink_broker

# --------------------------------------------------------------------------- sinks: TLS, HTTP


@pytest.fixture(scope="session")
def test_certs(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA, server cert (127.0.0.1/localhost), client cert, other CA."""
    return make_test_certs(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def http_server() -> Iterator[RecordingServer]:
    """A plain-HTTP recording server on 127.0.0.1 (script replies with .script)."""
    with running_server() as server:
        yield server


# --------------------------------------------------------------------------- sinks: mosquitto


@pytest.fixture(scope="session")
def mqtt_broker(
    tmp_path_factory: pytest.TempPathFactory, test_certs: TlsFiles
) -> Iterator[SinkBroker]:
    """A mosquitto shared by the MQTT sink tests (use unique topics and client
    ids): .port anonymous, .auth_port user/password, .tls_port mutual TLS."""
    with sink_broker(tmp_path_factory.mktemp("mosquitto"), test_certs) as broker:
        yield broker


@pytest.fixture
def own_mqtt_broker(tmp_path: Path, test_certs: TlsFiles) -> Iterator[SinkBroker]:
    """A mosquitto of the test's own, which it may stop and start again."""
    with sink_broker(tmp_path / "mosquitto", test_certs) as broker:
        yield broker
