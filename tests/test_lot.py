"""The lot schema: valid lots load, bad ones get errors that name the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from mockfleet.mock.durations import parse_duration, parse_size
from mockfleet.mock.lot import LotError, load_lot, parse_lot

ROOT = Path(__file__).resolve().parent.parent
BASE: dict[str, Any] = {
    "apiVersion": "mockfleet.dev/v1alpha1",
    "kind": "MockLot",
    "metadata": {"name": "t"},
    "spec": {
        "devices": 3,
        "payload": {"template": {"v": {"$gen": "uniform", "min": 0, "max": 1}}},
        "sink": {"type": "stdout"},
    },
}


def lot_with(**spec: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["spec"].update(spec)
    return data


def problems(data: Any) -> list[str]:
    with pytest.raises(LotError) as info:
        parse_lot(data, "x.yaml")
    return info.value.problems


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("5s", 5), ("1m", 60), ("1m30s", 90), ("2h", 7200), (3, 3.0), ("1.5", 1.5)],
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "5 parsecs", "-1s", "1x", True, None, -3])
def test_bad_durations_say_what_to_write(bad: Any) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_sizes() -> None:
    assert parse_size("64KiB") == 65536
    assert parse_size("1MB") == 1_000_000
    assert parse_size(10) == 10
    with pytest.raises(ValueError, match="size"):
        parse_size("lots")


def test_minimal_lot_and_device_ids() -> None:
    lot = parse_lot(lot_with(deviceId="{lot}-{index:03d}"))
    assert lot.device_id(7) == "t-007"
    assert lot.spec.timing.interval == 1.0


def test_every_example_validates() -> None:
    paths = sorted((ROOT / "examples").glob("*.yaml"))
    assert len(paths) >= 2
    for path in paths:
        load_lot(path)


def test_unknown_field_is_named() -> None:
    assert problems(lot_with(devicez=3)) == [
        "spec.devicez: unknown field (check its spelling and indentation)"
    ]


def test_generator_errors_name_their_path() -> None:
    data = lot_with(
        payload={
            "template": {
                "a": {"b": [{"$gen": "sine", "period": "soon"}]},
                "c": {"$gen": "nope"},
                "d": {"$gen": "uniform", "min": 5, "max": 1},
            }
        }
    )
    found = problems(data)
    assert any(
        p.startswith("spec.payload.template.a.b[0]: sine: period: invalid duration") for p in found
    )
    assert any(p.startswith("spec.payload.template.c: unknown generator 'nope'") for p in found)
    assert any(
        p.startswith("spec.payload.template.d: uniform: max (1.0) is below min") for p in found
    )


def test_bad_expression_is_rejected_at_validation() -> None:
    data = lot_with(payload={"template": {"x": {"$gen": "expr", "expr": "__import__('os')"}}})
    assert any("only these functions can be called" in p for p in problems(data))


def test_inline_credentials_are_refused() -> None:
    data = lot_with(sink={"type": "mqtt", "topic": "t/{id}", "password": "hunter2"})
    assert any("inline credential 'password'" in p and "passwordEnv" in p for p in problems(data))


def test_transition_to_unknown_state() -> None:
    data = lot_with(initialState="a", states={"a": {"transitions": [{"to": "b", "after": "1s"}]}})
    assert any("unknown state 'b'" in p for p in problems(data))


def test_transition_needs_exactly_one_trigger() -> None:
    data = lot_with(
        initialState="a",
        states={"a": {"transitions": [{"to": "a", "after": "1s", "probability": 0.5}]}},
    )
    assert any("exactly one of after, probability, when, command" in p for p in problems(data))


def test_command_transition_needs_a_command_channel() -> None:
    data = lot_with(
        initialState="a", states={"a": {"transitions": [{"to": "a", "command": "reboot"}]}}
    )
    assert any("command transitions need" in p for p in problems(data))


def test_template_names_are_checked() -> None:
    data = lot_with(sink={"type": "mqtt", "topic": "t/{device.__class__}"})
    assert any("plain name" in p for p in problems(data))
    data = lot_with(sink={"type": "mqtt", "topic": "t/{nothere}"})
    assert any("uses {nothere}" in p for p in problems(data))


def test_yaml_errors_have_a_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("apiVersion: x\n  kind: : y\n")
    with pytest.raises(LotError) as info:
        load_lot(f)
    assert "line" in info.value.problems[0]
    assert "not valid YAML" in info.value.problems[0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LotError, match="cannot read"):
        load_lot(tmp_path / "nope.yaml")


def test_lot_is_a_kubernetes_manifest() -> None:
    data = yaml.safe_load((ROOT / "examples" / "thermostats.yaml").read_text())
    assert data["apiVersion"] == "mockfleet.dev/v1alpha1"
    assert data["kind"] == "MockLot"


@pytest.mark.parametrize("timeout", ["0s", 0, "-1s"])
def test_an_http_timeout_must_be_positive(timeout: object) -> None:
    sink = {"type": "http", "url": "http://127.0.0.1:9/x", "timeout": timeout}
    found = problems(lot_with(sink=sink))
    assert any(p.startswith("spec.sink.timeout:") for p in found), found
