"""Shared fixtures. Each helper area keeps its fixtures in its own section;
the machinery lives in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.certs import TlsFiles, make_test_certs
from support.recording_http import RecordingServer, running_server

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
