"""The device engine on a simulated clock: states, transitions, faults, envelope."""

from __future__ import annotations

import copy
import itertools
import json
import math
from typing import Any

import pytest

from mockfleet.mock.device import CompiledLot, DeviceEngine, preview
from mockfleet.mock.lot import parse_lot

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
BASE: dict[str, Any] = {
    "apiVersion": "mockfleet.dev/v1alpha1",
    "kind": "MockLot",
    "metadata": {"name": "dev"},
    "spec": {
        "devices": 1000,
        "seed": 11,
        "timing": {"interval": "1s"},
        "payload": {
            "template": {
                "ts": {"$gen": "timestamp", "format": "epoch"},
                "v": {"$gen": "uniform", "min": 0, "max": 100},
                "n": {"$gen": "sequence"},
            }
        },
        "sink": {"type": "stdout"},
    },
}


def compiled(**spec: Any) -> CompiledLot:
    data = copy.deepcopy(BASE)
    data["spec"].update(spec)
    return CompiledLot.build(parse_lot(data))


def run(c: CompiledLot, count: int, index: int = 0) -> list[dict[str, Any]]:
    out = []
    for at, body, state in preview(c, index, count, T0):
        obj = json.loads(body)
        obj["_at"], obj["_state"] = at, state
        out.append(obj)
    return out


def bodies(c: CompiledLot, count: int, index: int = 0) -> list[bytes]:
    return [body for _, body, _ in preview(c, index, count, T0)]


def test_same_seed_and_index_give_the_same_bytes() -> None:
    c = compiled()
    assert bodies(c, 50, 3) == bodies(compiled(), 50, 3)
    assert bodies(c, 50, 3) != bodies(c, 50, 4)


def test_a_device_does_not_depend_on_the_size_of_its_lot() -> None:
    assert bodies(compiled(devices=5), 30, 4) == bodies(compiled(devices=5000), 30, 4)


def test_seed_changes_data() -> None:
    assert bodies(compiled(seed=1), 10) != bodies(compiled(seed=2), 10)


def test_envelope_numbers_messages_and_names_the_device() -> None:
    msgs = run(compiled(deviceId="d-{index}"), 5, index=2)
    assert [m["seq"] for m in msgs] == [0, 1, 2, 3, 4]
    assert {m["device_id"] for m in msgs} == {"d-2"}
    assert all(m["sent_at"] == pytest.approx(m["_at"]) for m in msgs)
    assert [m["_at"] - T0 for m in msgs] == [0, 1, 2, 3, 4]


def test_envelope_field_names_are_configurable() -> None:
    msg = run(compiled(envelope={"seqField": "n_", "sentAtField": "t_", "deviceField": "who"}), 1)[
        0
    ]
    assert {"n_", "t_", "who"} <= set(msg)
    assert "seq" not in msg


def test_jitter_and_start_spread_stay_in_bounds() -> None:
    msgs = run(compiled(timing={"interval": "10s", "jitter": "2s", "startSpread": "5s"}), 50)
    assert 0 <= msgs[0]["_at"] - T0 < 5
    gaps = [b["_at"] - a["_at"] for a, b in itertools.pairwise(msgs)]
    assert all(8 <= g <= 12 for g in gaps)
    assert len({round(g, 6) for g in gaps}) > 10


def test_max_messages_and_duration_end_the_device() -> None:
    assert len(run(compiled(timing={"interval": "1s", "maxMessages": 7}), 100)) == 7
    assert len(run(compiled(timing={"interval": "1s", "duration": "10s"}), 100)) == 10


STATES: dict[str, Any] = {
    "initialState": "ok",
    "states": {
        "ok": {"transitions": [{"to": "err", "after": "10s"}]},
        "err": {
            "payload": {"status": "error", "v": {"$gen": "constant", "value": -1}},
            "interval": "2s",
            "transitions": [{"to": "ok", "after": "6s"}],
        },
    },
}


def test_timed_transitions_override_payload_and_interval() -> None:
    msgs = run(compiled(**STATES), 14)
    states = [m["_state"] for m in msgs]
    assert states[:10] == ["ok"] * 10
    assert states[10:13] == ["err"] * 3
    assert states[13] == "ok"
    err = msgs[10]
    assert err["status"] == "error" and err["v"] == -1
    assert msgs[11]["_at"] - msgs[10]["_at"] == 2
    # the sequence generator continues across states (shared per-device state)
    assert [m["n"] for m in msgs] == list(range(14))


def test_probability_transition_rate() -> None:
    spec = {
        "initialState": "a",
        "states": {
            "a": {"transitions": [{"to": "b", "probability": 0.1}]},
            "b": {"transitions": [{"to": "a", "probability": 1.0}]},
        },
    }
    msgs = run(compiled(**spec), 5000)
    b = sum(m["_state"] == "b" for m in msgs)
    # a -> b with p=0.1 per message in a, b -> a at once: about 1/11 of messages in b
    expected = 5000 / 11
    assert abs(b - expected) < 5 * math.sqrt(expected)


def test_condition_transition_and_terminal_state() -> None:
    spec = {
        "payload": {"template": {"battery": {"$gen": "sequence", "start": 20, "step": -1}}},
        "initialState": "on",
        "states": {
            "on": {"transitions": [{"to": "dead", "when": "battery < 10"}]},
            "dead": {"terminal": True},
        },
    }
    msgs = run(compiled(**spec), 100)
    assert [m["battery"] for m in msgs][-1] == 9
    assert len(msgs) == 12


def test_offline_state_sends_nothing_and_consumes_no_seq() -> None:
    spec = {
        "initialState": "on",
        "states": {
            "on": {"transitions": [{"to": "off", "after": "3s"}]},
            "off": {"offline": True, "transitions": [{"to": "on", "after": "5s"}]},
        },
    }
    msgs = run(compiled(**spec), 6)
    assert [m["_at"] - T0 for m in msgs] == [0, 1, 2, 8, 9, 10]
    assert [m["seq"] for m in msgs] == list(range(6))


def test_command_transition() -> None:
    spec = {
        "initialState": "locked",
        "states": {
            "locked": {"transitions": [{"to": "open", "command": "unlock"}]},
            "open": {"payload": {"open": True}},
        },
        "sink": {"type": "http", "url": "http://127.0.0.1:1/x"},
    }
    engine = DeviceEngine(compiled(**spec), 0, T0)
    assert not engine.on_command("bogus", T0)
    assert engine.on_command("unlock", T0 + 1)
    assert engine.state == "open"
    msg = engine.tick(engine.next_due())[0]
    assert msg.obj["open"] is True


def counted(c: CompiledLot, n: int) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    for _, body, _ in preview(c, 0, n, T0):
        try:
            out.append(json.loads(body))
        except ValueError:
            out.append(None)
    return out


def within(observed: int, n: int, rate: float) -> bool:
    mean = n * rate
    return abs(observed - mean) < 5 * math.sqrt(n * rate * (1 - rate)) + 1


def test_drop_rate() -> None:
    msgs = counted(compiled(faults=[{"type": "drop", "rate": 0.1}]), 4000)
    seqs = [m["seq"] for m in msgs if m]
    dropped = seqs[-1] + 1 - len(seqs)
    assert within(dropped, seqs[-1] + 1, 0.1)


def test_duplicate_rate() -> None:
    msgs = counted(compiled(faults=[{"type": "duplicate", "rate": 0.05}]), 4000)
    seqs = [m["seq"] for m in msgs if m]
    assert within(len(seqs) - len(set(seqs)), len(set(seqs)), 0.05)


def test_out_of_order_rate() -> None:
    msgs = counted(compiled(faults=[{"type": "outOfOrder", "rate": 0.05}]), 4000)
    seqs = [m["seq"] for m in msgs if m]
    inversions = sum(1 for a, b in itertools.pairwise(seqs) if b < a)
    assert sorted(seqs) == list(range(len(seqs)))
    assert within(inversions, len(seqs), 0.05 * 0.95)


def test_malformed_rate_and_bytes_do_not_parse() -> None:
    msgs = counted(compiled(faults=[{"type": "malformed", "rate": 0.05}]), 4000)
    assert within(sum(m is None for m in msgs), 4000, 0.05)


def test_oversize() -> None:
    out = bodies(compiled(faults=[{"type": "oversize", "rate": 1, "size": "8KiB"}]), 3)
    assert all(8192 - 64 <= len(b) <= 8192 + 64 for b in out)


def test_late_timestamps_and_clock_skew() -> None:
    late = run(compiled(faults=[{"type": "lateTimestamp", "rate": 1, "delay": "5m"}]), 3)
    assert all(m["sent_at"] - m["ts"] == pytest.approx(300) for m in late)
    skew = run(
        compiled(faults=[{"type": "clockSkew", "rate": 1, "skew": "30s", "skewSign": "ahead"}]), 3
    )
    assert all(m["ts"] - m["sent_at"] == pytest.approx(30) for m in skew)


def test_offline_fault_buffers_then_bursts() -> None:
    c = compiled(faults=[{"type": "offline", "rate": 0.02, "offlineFor": "20s", "buffer": True}])
    msgs = run(c, 2000)
    seqs = [m["seq"] for m in msgs]
    assert seqs == list(range(len(seqs)))  # nothing lost: buffered then sent in order
    sent_times = [m["_at"] for m in msgs]
    bursts = sum(1 for a, b in itertools.pairwise(sent_times) if a == b)
    assert bursts > 10  # many messages go out at the same instant on reconnect


def test_per_state_faults_apply_only_in_that_state() -> None:
    spec = {
        "initialState": "good",
        "states": {
            "good": {"transitions": [{"to": "bad", "after": "100s"}]},
            "bad": {"faults": [{"type": "malformed", "rate": 1}]},
        },
    }
    msgs = counted(compiled(**spec), 120)
    assert all(m is not None for m in msgs[:100])
    assert all(m is None for m in msgs[100:])


def test_bulk_packs_samples() -> None:
    c = compiled(payload={"bulk": 4, "template": {"n": {"$gen": "sequence"}}})
    msgs = run(c, 3)
    assert [[s["n"] for s in m["samples"]] for m in msgs] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9, 10, 11],
    ]
    assert [m["seq"] for m in msgs] == [0, 1, 2]


def test_text_format() -> None:
    c = compiled(
        payload={
            "format": "text",
            "text": "{id},{n},{seq}",
            "template": {"n": {"$gen": "sequence", "start": 5}},
        },
        deviceId="x{index}",
    )
    assert [b.decode() for b in bodies(c, 2)] == ["x0,5,0", "x0,6,1"]


def test_variables_fixed_per_device() -> None:
    c = compiled(
        variables={"site": {"$gen": "choice", "options": ["a", "b", "c", "d", "e", "f"]}},
        payload={"template": {"site": {"$gen": "var", "name": "site"}}},
    )
    per_device = [{m["site"] for m in run(c, 20, i)} for i in range(30)]
    assert all(len(s) == 1 for s in per_device)
    assert len(set().union(*per_device)) > 2


def test_scheduled_at_is_stamped_when_asked() -> None:
    c = compiled(envelope={"scheduledAtField": "due_at"}, timing={"interval": "2s"})
    msgs = run(c, 3)
    assert [m["due_at"] - T0 for m in msgs] == [0, 2, 4]
    assert "due_at" not in run(compiled(), 1)[0]


def test_the_data_of_a_seed_is_pinned_across_versions() -> None:
    """Same lot seed + same device index => the same data, on any machine and
    in every release: faults, jitter, start spread and random transitions
    each draw from their own stream, made when first used. The digest was
    taken when every stream was still made with the device."""
    import hashlib

    c = compiled(
        timing={"interval": "1s", "jitter": "200ms", "startSpread": "3s"},
        faults=[
            {"type": "clockSkew", "rate": 0.5, "skew": "2s"},
            {"type": "drop", "rate": 0.1},
            {"type": "malformed", "rate": 0.1},
            {"type": "duplicate", "rate": 0.1},
        ],
        initialState="a",
        states={
            "a": {"transitions": [{"to": "b", "probability": 0.3}]},
            "b": {"transitions": [{"to": "a", "probability": 0.5}]},
        },
    )
    digest = hashlib.sha256()
    for index in (0, 7):
        for at, body, state in preview(c, index, 200, T0):
            digest.update(f"{at:.6f}|{state}|".encode() + body + b"\n")
    assert digest.hexdigest() == (
        "db20ffe5e8d69b29ceaa3c64e32f1233a2c9779426078a6d96d862320b7d2c0d"
    )


def test_a_plain_device_seeds_no_stream_it_does_not_use() -> None:
    """Seeding a stream costs most of a device's build: a lot without faults,
    spread, jitter or random transitions makes none of those streams."""
    engine = DeviceEngine(compiled(), 3, T0)
    for _ in range(5):
        engine.tick(engine.next_due())
    assert engine.messages == 5
    assert (engine._rng_faults, engine._rng_states, engine._rng_timing) == (None, None, None)
    spread = DeviceEngine(compiled(timing={"interval": "1s", "startSpread": "2s"}), 3, T0)
    assert spread._rng_timing is not None and spread._rng_faults is None
