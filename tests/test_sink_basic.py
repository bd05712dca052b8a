"""stdout and file sinks, the sink factory, secrets and TLS contexts."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.certs import TlsFiles

from mockfleet.mock import lot
from mockfleet.mock.plainlot import to_plain
from mockfleet.mock.sinks.backoff import backoff_delay
from mockfleet.mock.sinks.base import FatalSinkError
from mockfleet.mock.sinks.credentials import read_secret
from mockfleet.mock.sinks.factory import make_sink, preload_sink
from mockfleet.mock.sinks.file import FileSink
from mockfleet.mock.sinks.stdout import StdoutSink
from mockfleet.mock.sinks.tls import ssl_context

NAMES = {"id": "dev-3", "index": 3, "lot": "meters"}


def go_on(seconds: float) -> bool:
    return True


def spec_of(data: dict[str, Any]) -> Any:
    """The sink's plain mirror, as devices get it (mockfleet.mock.plain)."""
    return to_plain(lot.LotSpec.model_validate({"devices": 1, "sink": data}).sink)


# --------------------------------------------------------------------------- stdout


def test_stdout_writes_one_line_per_message(capsys: pytest.CaptureFixture[str]) -> None:
    sink = make_sink(spec_of({"type": "stdout"}), NAMES)
    assert isinstance(sink, StdoutSink)
    sink.open(go_on)
    assert sink.send(b'{"a": 1}', go_on).ok
    assert sink.send(b'{"a": 2}', go_on).ok
    sink.close(1)
    assert capsys.readouterr().out == '{"a": 1}\n{"a": 2}\n'


def test_stdout_lines_reach_a_pipe_as_they_are_sent() -> None:
    # A real process writing to a real pipe: each line arrives before the next send.
    script = (
        "import sys\n"
        "from mockfleet.mock.lot import StdoutSink as S\n"
        "from mockfleet.mock.sinks.factory import make_sink\n"
        "s = make_sink(S(type='stdout'), {'id': 'x'}); s.open(lambda t: True)\n"
        "for i in range(3):\n"
        "    s.send(('{\"i\": %d}' % i).encode(), lambda t: True)\n"
        "    assert sys.stdin.readline() == 'next\\n'\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        for i in range(3):
            assert json.loads(proc.stdout.readline()) == {"i": i}
            proc.stdin.write("next\n")
            proc.stdin.flush()
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- file


def test_file_sink_appends_flushed_lines_to_a_templated_path(tmp_path: Path) -> None:
    sink = make_sink(
        spec_of({"type": "file", "path": str(tmp_path / "{lot}" / "{id}.jsonl")}), NAMES
    )
    assert isinstance(sink, FileSink)
    target = tmp_path / "meters" / "dev-3.jsonl"
    sink.open(go_on)
    try:
        for i in range(3):
            assert sink.send(json.dumps({"i": i}).encode(), go_on).ok
            # flushed per message: another reader sees it before close
            lines = target.read_text().splitlines()
            assert [json.loads(line)["i"] for line in lines] == list(range(i + 1))
    finally:
        sink.close(1)
    again = make_sink(spec_of({"type": "file", "path": str(target)}), NAMES)
    again.open(go_on)
    again.send(b'{"i": 3}', go_on)
    again.close(1)
    assert len(target.read_text().splitlines()) == 4  # appended, not truncated


def test_file_sink_in_an_impossible_place_is_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("")
    sink = make_sink(spec_of({"type": "file", "path": str(blocker / "x.jsonl")}), NAMES)
    with pytest.raises(FatalSinkError, match="afile"):
        sink.open(go_on)


# --------------------------------------------------------------------------- factory


def test_factory_renders_templates_with_constants_and_variables(tmp_path: Path) -> None:
    spec = lot.FileSink(type="file", path=str(tmp_path / "{site}-{index:03d}.jsonl"))
    sink = make_sink(spec, {**NAMES, "site": "north"})
    assert isinstance(sink, FileSink)
    assert sink.path == str(tmp_path / "north-003.jsonl")


def test_factory_template_with_an_unknown_name_is_fatal() -> None:
    spec = lot.FileSink(type="file", path="/tmp/{zone}.jsonl")
    with pytest.raises(FatalSinkError, match=r"sink\.path.*\{zone\}"):
        make_sink(spec, NAMES)


def test_factory_imports_only_the_transport_in_use() -> None:
    script = (
        "import sys\n"
        "from mockfleet.mock.lot import StdoutSink as S\n"
        "from mockfleet.mock.sinks.factory import make_sink\n"
        "make_sink(S(type='stdout'), {'id': 'x'})\n"
        "print(sorted(m for m in sys.modules if m.startswith(('paho', 'mockfleet.mock.sinks.'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    loaded = json.loads(out.replace("'", '"'))
    assert "mockfleet.mock.sinks.stdout" in loaded
    assert not any(m.startswith("paho") for m in loaded)
    assert "mockfleet.mock.sinks.http" not in loaded
    assert "mockfleet.mock.sinks.mqtt" not in loaded


def test_preload_imports_the_sink_and_builds_its_tls_context(test_certs: TlsFiles) -> None:
    spec = spec_of({"type": "http", "url": "https://127.0.0.1/x", "tls": {"caFile": test_certs.ca}})
    ssl_context.cache_clear()
    preload_sink(spec)
    assert ssl_context.cache_info().currsize == 1
    # a broken TLS file is left for the device to report
    preload_sink(spec_of({"type": "http", "url": "https://h/x", "tls": {"caFile": "/nonexistent"}}))


# --------------------------------------------------------------------------- TLS and secrets


def test_tls_contexts_are_shared_between_equal_specs(test_certs: TlsFiles) -> None:
    a = ssl_context(lot.Tls(caFile=test_certs.ca), ssl.Purpose.SERVER_AUTH)
    b = ssl_context(lot.Tls(caFile=test_certs.ca), ssl.Purpose.SERVER_AUTH)
    c = ssl_context(lot.Tls(caFile=test_certs.ca, verify=False), ssl.Purpose.SERVER_AUTH)
    assert a is b
    assert c is not a
    assert a.verify_mode == ssl.CERT_REQUIRED and a.check_hostname
    assert c.verify_mode == ssl.CERT_NONE and not c.check_hostname


def test_a_ca_file_that_is_not_pem_is_fatal(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("hello\n")
    with pytest.raises(FatalSinkError, match="caFile"):
        ssl_context(lot.Tls(caFile=str(bad)))


def test_secrets_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MF_SECRET", "from-env")
    f = tmp_path / "s"
    f.write_text("from-file\n")
    assert read_secret("x", env="MF_SECRET") == "from-env"
    assert read_secret("x", file=str(f)) == "from-file"
    assert read_secret("x") is None
    monkeypatch.delenv("MF_SECRET")
    with pytest.raises(FatalSinkError, match="MF_SECRET") as err:
        read_secret("x", env="MF_SECRET")
    assert "from-env" not in str(err.value)


def test_backoff_doubles_up_to_the_cap() -> None:
    import random

    rng = random.Random(1)
    delays = [backoff_delay(n, 0.1, 1.0, rng) for n in range(8)]
    for n, d in enumerate(delays):
        cap = min(1.0, 0.1 * 2**n)
        assert cap / 2 <= d <= cap
    assert backoff_delay(10_000, 0.1, 1.0, rng) <= 1.0
    assert backoff_delay(3, 0, 1.0, rng) == 0
