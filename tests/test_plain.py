"""The plain mirror of a validated lot (mockfleet.mock.plain): the zygote and
every device read it instead of the pydantic models, which then never load
in the process that forks the devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from mockfleet.mock.device import CompiledLot, preview
from mockfleet.mock.generators.specs import GENERATOR_ADAPTER
from mockfleet.mock.lot import LotError, MockLot, State, load_lot
from mockfleet.mock.loterror import ValidatorFailed
from mockfleet.mock.plain import PlainLot, Spec
from mockfleet.mock.plainlot import plain_lot
from mockfleet.mock.preload import loaded_lot, validate_in_child

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
THERMOSTATS = ROOT / "examples" / "thermostats.yaml"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_mirror_has_every_field_with_the_models_values(example: Path) -> None:
    lot = load_lot(example)
    mirror = plain_lot(lot)
    assert isinstance(mirror, PlainLot)
    assert mirror.name == lot.name
    assert [mirror.device_id(i) for i in (0, 7)] == [lot.device_id(i) for i in (0, 7)]
    # every part without templates matches the model's own dump, defaults included
    for part in ("timing", "envelope", "sink", "restart", "tower"):
        assert getattr(mirror.spec, part).to_data() == getattr(lot.spec, part).model_dump(), part
    assert [f.to_data() for f in mirror.spec.faults] == [f.model_dump() for f in lot.spec.faults]
    assert mirror.spec.constants == lot.spec.constants
    assert mirror.default_state.to_data() == State().model_dump()


def test_generators_in_templates_come_parsed_with_their_defaults() -> None:
    lot = load_lot(THERMOSTATS)
    mirror = plain_lot(lot)
    raw = lot.spec.payload.template
    found = 0
    for key, value in raw.items():
        if isinstance(value, dict) and "$gen" in value:
            spec = mirror.spec.payload.template[key]
            assert isinstance(spec, Spec)
            assert spec.gen == value["$gen"]
            model = GENERATOR_ADAPTER.validate_python(value)
            assert spec.to_data() == model.model_dump(), key
            found += 1
    assert found >= 3
    # plain values stay plain
    assert all(
        mirror.spec.payload.template[k] == v
        for k, v in raw.items()
        if not (isinstance(v, dict) and "$gen" in v)
    )


def test_replace_copies_and_refuses_unknown_fields() -> None:
    sink = plain_lot(load_lot(ROOT / "examples" / "quickstart.yaml")).spec.sink
    other = sink.replace(url="http://127.0.0.1:1/x")
    assert other.url == "http://127.0.0.1:1/x" and other is not sink
    assert sink.url != other.url  # the shared original is untouched
    with pytest.raises(AttributeError, match="no field nosuch"):
        sink.replace(nosuch=1)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_validator_child_sends_back_the_same_lot(example: Path) -> None:
    here = CompiledLot.build(load_lot(example))
    there = CompiledLot.build(validate_in_child(str(example)))
    assert there.lot.name == here.lot.name
    # same seed + same index => the same bytes, whichever process validated it
    for index in (0, 3):
        assert preview(there, index, 30, 1_800_000_000.0) == preview(
            here, index, 30, 1_800_000_000.0
        )


def test_the_validator_child_reports_the_same_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: mockfleet.dev/v1alpha1\nkind: MockLot\nmetadata: {name: bad}\n"
        "spec:\n  devices: -1\n  timing: {interval: soon}\n"
        "  payload: {template: {t: {$gen: nosuch}}}\n"
    )
    with pytest.raises(LotError) as here:
        load_lot(bad)
    children = _children()
    with pytest.raises(LotError) as there:
        validate_in_child(str(bad))
    assert there.value.problems == here.value.problems
    assert len(there.value.problems) >= 3
    with pytest.raises(LotError, match="cannot read the file"):
        validate_in_child(str(tmp_path / "missing.yaml"))
    assert _children() == children  # no validator left behind, not even a zombie


def _children() -> set[int]:
    """This process's children, zombies included (other tests' servers too)."""
    return {c.pid for c in psutil.Process().children()}


_LEAN = """
import json, sys
from mockfleet.mock.preload import isolate_validation, preload, prepare_lot
from mockfleet.tower import zygote  # noqa: F401  (what the zygote process imports)
isolate_validation()
preload(())
lot, fresh = prepare_lot(sys.argv[1])  # validates in a child, rehearses here
from mockfleet.mock.counters import SLOT_SIZE, CounterSlot
from mockfleet.mock.runtime import DeviceRunner, Logger
import io
slot = CounterSlot(bytearray(SLOT_SIZE), 0)
log = Logger(lot.lot.name, lot.lot.device_id(5), io.StringIO())
runner = DeviceRunner(lot.compiled, 5, stop_file=None, counters=slot, log=log)
msgs = runner.engine.tick(runner.engine.next_due())
heavy = sorted(m for m in sys.modules
               if m.split(".")[0] in ("pydantic", "pydantic_core", "yaml", "annotated_types"))
openssl = sorted(m for m in ("ssl", "_ssl", "_hashlib") if m in sys.modules)
# what no device needs at run time (see mockfleet.mock.record and plain.dumps)
spare = sorted(m for m in ("dataclasses", "inspect", "ast", "pathlib", "urllib.parse",
                           "ipaddress", "platform", "pickle", "traceback", "base64")
               if m in sys.modules)
# extension modules (five mappings each) and threading, loaded only for a lot that needs them
optional = sorted(m for m in ("encodings.idna", "unicodedata", "resource", "threading")
                  if m in sys.modules)
print(json.dumps({"heavy": heavy, "openssl": openssl, "spare": spare, "fresh": fresh,
                  "optional": optional,
                  "messages": len(msgs),
                  "restart": lot.lot.spec.restart.to_data()}))
"""


def _lean(lot: Path) -> dict[str, Any]:
    """What a process preloaded as the zygote holds after preparing ``lot``."""
    out = subprocess.run(
        [sys.executable, "-c", _LEAN, str(lot)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_a_zygote_never_loads_pydantic_or_yaml(example: Path) -> None:
    result = _lean(example)
    assert result["heavy"] == []
    assert result["fresh"] is True
    assert result["restart"] == load_lot(example).spec.restart.model_dump(mode="json")


_HTTP_LOT = """
apiVersion: mockfleet.dev/v1alpha1
kind: MockLot
metadata: {name: lean}
spec:
  devices: 10
  payload: {template: {t: {$gen: sine, period: 1h}}}
  sink: {type: http, url: "%s://127.0.0.1:9/in/{id}"}
"""


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_openssl_loads_only_for_a_lot_that_needs_tls(scheme: str, tmp_path: Path) -> None:
    """OpenSSL (ssl, _hashlib: about 1 MiB of private memory and 20 mappings)
    stays out of a zygote whose lots send plain HTTP: every mock fork would
    copy its page tables and every mock exit tear them down. An https lot
    has it preloaded, before the forks, rather than imported by each device."""
    lot = tmp_path / "lot.yaml"
    lot.write_text(_HTTP_LOT % scheme)
    result = _lean(lot)
    assert result["messages"] == 1
    # Only what a device runs stays in the zygote, whose memory every mock
    # inherits (ssl itself needs base64).
    assert result["spare"] == ([] if scheme == "http" else ["base64"])
    if scheme == "http":
        assert result["openssl"] == []
    else:
        assert "ssl" in result["openssl"]


def test_loaded_lot_holds_the_mirror() -> None:
    loaded = loaded_lot(THERMOSTATS)
    assert isinstance(loaded.lot, PlainLot)
    assert loaded.compiled.lot is loaded.lot


def test_a_validator_that_dies_is_a_passing_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """The zygote retries a start whose validator died (ValidatorFailed), where
    it refuses one whose lot is invalid (LotError)."""
    import signal

    import mockfleet.mock.plainlot

    def die(_path: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)  # runs in the forked validator

    monkeypatch.setattr(mockfleet.mock.plainlot, "load_plain_lot", die)
    children = _children()
    with pytest.raises(ValidatorFailed, match="died without an answer") as exc:
        validate_in_child(str(THERMOSTATS))
    assert not isinstance(exc.value, LotError)
    assert _children() == children  # reaped


def test_a_broken_lot_is_validated_once_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thousand start triggers of one broken lot cost one validator child."""
    from mockfleet.mock import preload

    monkeypatch.setattr(preload, "_ISOLATED", True)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: mockfleet.dev/v1alpha1\nkind: MockLot\nmetadata: {name: bad}\n"
        "spec: {devices: -1}\n"
    )
    with pytest.raises(LotError) as first:
        preload.loaded_lot(bad)

    def no_fork() -> int:
        raise AssertionError("validated again")

    monkeypatch.setattr(os, "fork", no_fork)
    for _ in range(3):
        with pytest.raises(LotError) as again:
            preload.loaded_lot(bad)
        assert again.value.problems == first.value.problems
    # a template that does not compile is remembered too
    cyclic = tmp_path / "cyclic.yaml"
    cyclic.write_text(
        "apiVersion: mockfleet.dev/v1alpha1\nkind: MockLot\nmetadata: {name: cyc}\n"
        "spec:\n  devices: 1\n  payload:\n    template:\n"
        "      a: {$gen: expr, expr: 'b + 1'}\n      b: {$gen: expr, expr: 'a + 1'}\n"
    )
    monkeypatch.undo()
    monkeypatch.setattr(preload, "_ISOLATED", True)
    with pytest.raises(ValueError, match="cycle"):
        preload.loaded_lot(cyclic)
    monkeypatch.setattr(os, "fork", no_fork)
    with pytest.raises(ValueError, match="cycle"):
        preload.loaded_lot(cyclic)
    # an edited file is read again
    monkeypatch.undo()
    monkeypatch.setattr(preload, "_ISOLATED", True)
    bad.write_text(THERMOSTATS.read_text())
    assert preload.loaded_lot(bad).lot.name == load_lot(THERMOSTATS).name


def test_no_model_field_hides_a_method_of_the_mirror() -> None:
    """A field named like a Spec method (replace, fields, ...) would shadow it."""
    from pydantic import BaseModel

    import mockfleet.mock.generators.specs
    import mockfleet.mock.lot  # noqa: F401

    seen: set[type[BaseModel]] = set()
    todo = list(BaseModel.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo.extend(cls.__subclasses__())
        if not cls.__module__.startswith("mockfleet.mock"):
            continue
        mirror = PlainLot if cls.__name__ == "MockLot" else Spec
        clash = {f for f in cls.model_fields if hasattr(mirror, f)}
        assert not clash, f"{cls.__name__}: {clash}"
    assert len(seen) > 30


def test_the_mirror_travels_by_marshal_with_its_types() -> None:
    from mockfleet.mock import plain

    inner = plain.make("Sine", {"gen": "sine", "period": 3600.0, "amplitude": 1})
    value = (
        "ok",
        plain.make(
            "MockLot",
            {
                "metadata": plain.make("Metadata", {"name": "m"}),
                "spec": plain.make(
                    "Spec",
                    {"t": {"x": inner, 3: [1, 2.5, None, True, b"raw"]}, "pair": (1, "a")},
                ),
            },
        ),
    )
    back = plain.loads(plain.dumps(value))
    assert back[0] == "ok"
    lot = back[1]
    assert isinstance(lot, PlainLot) and lot.name == "m"
    assert lot.to_data() == value[1].to_data()
    assert isinstance(lot.spec.t["x"], Spec) and lot.spec.t["x"]._model == "Sine"
    assert lot.spec.t[3] == [1, 2.5, None, True, b"raw"]
    assert lot.spec.pair == (1, "a")  # a tuple stays a tuple


def test_a_value_marshal_cannot_carry_falls_back_to_pickle(tmp_path: Path) -> None:
    """YAML reads an unquoted 2024-01-01 as a date: the mirror still arrives."""
    import datetime

    from mockfleet.mock import plain

    with pytest.raises(TypeError, match="date"):
        plain.dumps({"since": datetime.date(2024, 1, 1)})
    lot = tmp_path / "dated.yaml"
    lot.write_text(
        "apiVersion: mockfleet.dev/v1alpha1\nkind: MockLot\nmetadata: {name: dated}\n"
        "spec:\n  devices: 3\n  constants: {since: 2024-01-01}\n"
        "  payload: {template: {t: {$gen: sine, period: 1h}}}\n  sink: {type: stdout}\n"
    )
    mirrored = validate_in_child(str(lot))
    assert mirrored.spec.constants == {"since": datetime.date(2024, 1, 1)}


def test_a_long_lived_validator_answers_every_lot_without_forking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The zygote's validator imports pydantic once; each lot after that is one
    request on its socket: no fork, no import."""
    from mockfleet.mock.validator import LotValidator

    children = _children()
    validator = LotValidator()
    validator.start()
    try:
        assert validator.pid in _children()

        def no_fork() -> int:
            raise AssertionError("forked a validator per lot")

        monkeypatch.setattr(os, "fork", no_fork)
        for example in EXAMPLES:
            there = CompiledLot.build(validator.validate(str(example)))
            here = CompiledLot.build(load_lot(example))
            assert preview(there, 2, 10, 1_800_000_000.0) == preview(here, 2, 10, 1_800_000_000.0)
        bad = tmp_path / "bad.yaml"
        bad.write_text(
            "apiVersion: mockfleet.dev/v1alpha1\nkind: MockLot\nmetadata: {name: bad}\n"
            "spec: {devices: -1}\n"
        )
        with pytest.raises(LotError) as there_err:
            validator.validate(str(bad))
        with pytest.raises(LotError) as here_err:
            load_lot(bad)
        assert there_err.value.problems == here_err.value.problems
    finally:
        monkeypatch.undo()
        validator.stop()
    assert _children() == children  # stopped and reaped


def test_a_validator_that_died_is_replaced_at_the_next_lot() -> None:
    import signal

    from mockfleet.mock.validator import LotValidator

    children = _children()
    validator = LotValidator()
    validator.start()
    first = validator.pid
    try:
        os.kill(first, signal.SIGKILL)
        with pytest.raises(ValidatorFailed, match="died without an answer"):
            validator.validate(str(THERMOSTATS))
        assert first not in _children()  # reaped
        assert validator.validate(str(THERMOSTATS)).name == load_lot(THERMOSTATS).metadata.name
        assert validator.pid not in (0, first)
    finally:
        validator.stop()
    assert _children() == children


def test_the_validator_exits_when_its_owner_is_gone() -> None:
    """An owner that dies without stopping it (a zygote killed with -9) leaves
    no validator behind: it reads end-of-file on its socket and exits."""
    script = (
        "import os\n"
        "from mockfleet.mock import preload\n"
        "preload.serve_validation()\n"
        "print(preload._VALIDATOR.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    pid = int(out.stdout.split()[0])

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 30
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone()


def test_a_lot_that_takes_too_long_to_validate_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The zygote waits for each answer, so a lot that would hold it (a YAML
    bomb) is refused after a deadline, and its validator replaced."""
    from mockfleet.mock import validator as vmod

    def slow(_path: str) -> tuple[object, ...]:
        time.sleep(60)  # runs in the validator child, which is then killed
        return ("failed", "unreachable")

    monkeypatch.setattr(vmod, "result_for", slow)
    monkeypatch.setattr(vmod, "STOP_TIMEOUT", 0.2)
    children = _children()
    validator = vmod.LotValidator()
    validator.start()
    with pytest.raises(LotError, match=r"longer than 0\.5 s"):
        validator.validate(str(THERMOSTATS), timeout=0.5)
    assert validator.pid == 0 and validator.sock is None
    assert _children() == children  # killed and reaped


@pytest.mark.parametrize(
    ("url", "optional"),
    [
        ("http://127.0.0.1:9/in/{id}", []),
        ("http://[::1]:9/in/{id}", []),
        ("http://localhost:9/in/{id}", ["encodings.idna", "unicodedata"]),
    ],
)
def test_name_lookup_modules_load_only_for_a_lot_that_connects_to_a_name(
    url: str, optional: list[str], tmp_path: Path
) -> None:
    """A host name is encoded with the idna codec (encodings.idna, stringprep,
    unicodedata) before each connection: loaded once in the zygote for a lot
    that needs it, and left out for one that connects to an address. Nor does
    the zygote hold resource or threading for a lot that needs neither."""
    lot = tmp_path / "lot.yaml"
    lot.write_text(_HTTP_LOT.replace('"%s://127.0.0.1:9/in/{id}"', f'"{url}"'))
    assert _lean(lot)["optional"] == optional


@pytest.mark.parametrize(
    ("sink", "expected"),
    [
        ({"type": "http", "url": "http://10.1.2.3:8080/x"}, False),
        ({"type": "http", "url": "https://[2001:db8::1]/x"}, False),
        ({"type": "http", "url": "http://backend.svc:8080/x"}, True),
        ({"type": "http", "url": "http://{lot}.svc/x"}, True),
        ({"type": "mqtt", "host": "10.0.0.7"}, False),
        ({"type": "mqtt", "host": "broker"}, True),
        ({"type": "stdout"}, False),
    ],
)
def test_which_sinks_need_a_name_lookup(sink: dict[str, Any], expected: bool) -> None:
    from mockfleet.mock.sinks.factory import needs_name_lookup

    spec = MockLot.model_validate(
        {
            "apiVersion": "mockfleet.dev/v1alpha1",
            "kind": "MockLot",
            "metadata": {"name": "n"},
            "spec": {"devices": 1, "payload": {"template": {"t": 1}}, "sink": sink},
        }
    ).spec.sink
    assert needs_name_lookup(spec) is expected
