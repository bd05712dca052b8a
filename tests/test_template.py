"""Template compilation, per-device instances, state overrides and expressions."""

from __future__ import annotations

from typing import Any

import pytest

from mockfleet.mock.generators.base import Context, Generator
from mockfleet.mock.lot import parse_lot
from mockfleet.mock.seeding import device_seed
from mockfleet.mock.template import (
    compile_states,
    compile_template,
    merge_override,
    render_variables,
)


def ctx(**kw: Any) -> Context:
    base: dict[str, Any] = {"device_id": "d-1", "index": 1, "lot": "lot", "vars": {}}
    base.update(kw)
    return Context(**base)


def lot_with(spec: dict[str, Any]) -> Any:
    return parse_lot(
        {
            "apiVersion": "mockfleet.dev/v1alpha1",
            "kind": "MockLot",
            "metadata": {"name": "tlot"},
            "spec": {"devices": 3, **spec},
        }
    )


def render_series(template: Any, seed: int, n: int, **kw: Any) -> list[Any]:
    inst = compile_template(template).instantiate(seed, {})
    c = ctx(**kw)
    out = []
    for i in range(n):
        c.seq = i
        c.elapsed = float(i)
        c.now = 1_700_000_000.0 + i
        out.append(inst.render(c))
    return out


def test_renders_literals_and_generators_in_template_order() -> None:
    tpl = {
        "a": 1,
        "b": {"$gen": "sequence", "start": 5},
        "nested": {"x": [1, {"$gen": "device", "field": "id"}], "lit": {"k": "v"}},
        "d": {"$gen": "constant", "value": "c"},
    }
    first, second = render_series(tpl, 1, 2)
    assert list(first) == ["a", "b", "nested", "d"]
    assert first == {"a": 1, "b": 5, "nested": {"x": [1, "d-1"], "lit": {"k": "v"}}, "d": "c"}
    assert second["b"] == 6


def test_render_returns_fresh_containers() -> None:
    tpl = {"a": {"$gen": "sequence"}, "n": {"m": [{"$gen": "constant", "value": 1}]}, "l": [1]}
    inst = compile_template(tpl).instantiate(1, {})
    c = ctx()
    one, two = inst.render(c), inst.render(c)
    assert one is not two
    assert one["n"] is not two["n"] and one["n"]["m"] is not two["n"]["m"]
    one["a"] = "changed"
    one["n"]["m"].append(99)
    assert inst.render(c)["n"] == {"m": [1]}


def test_non_object_templates() -> None:
    assert render_series([{"$gen": "sequence"}, 7], 1, 2) == [[0, 7], [1, 7]]
    assert render_series({"$gen": "sequence", "start": 3}, 1, 2) == [3, 4]
    assert render_series("plain", 1, 1) == ["plain"]
    assert render_series({"$gen": "expr", "expr": "index * 2"}, 1, 1) == [2]


def test_node_ids_are_paths() -> None:
    tpl = {
        "a": {"$gen": "uuid"},
        "b": [{"x": {"$gen": "uuid"}}],
        "e": {"$gen": "expr", "expr": "1"},
    }
    assert compile_template(tpl).node_ids == ("payload.a", "payload.b[0].x", "payload.e")


def test_adding_a_field_does_not_change_existing_series() -> None:
    base = {"t": {"$gen": "normal", "mean": 10}, "u": {"$gen": "uuid"}}
    more = {"z": {"$gen": "uniform"}, **base, "w": {"$gen": "normal"}}
    a = render_series(base, 77, 20)
    b = render_series(more, 77, 20)
    assert [r["t"] for r in a] == [r["t"] for r in b]
    assert [r["u"] for r in a] == [r["u"] for r in b]


def test_same_seed_same_data_other_seed_other_data() -> None:
    tpl = {"t": {"$gen": "normal"}, "w": {"$gen": "randomWalk", "start": 0}}
    assert render_series(tpl, 5, 10) == render_series(tpl, 5, 10)
    assert render_series(tpl, 5, 10) != render_series(tpl, 6, 10)


# --------------------------------------------------------------------------- expressions


def test_expressions_see_fields_vars_and_device_names_in_dependency_order() -> None:
    tpl = {
        "f": {"$gen": "expr", "expr": "c * 9 / 5 + 32"},
        "c": {"$gen": "sequence", "start": 10},
        "label": {"$gen": "expr", "expr": "site + '-' + id + '-' + str(index) + ':' + str(f)"},
        "nested": {"double_f": {"$gen": "expr", "expr": "f * 2", "round": 1}},
        "tt": {"$gen": "expr", "expr": "t + seq"},
    }
    inst = compile_template(tpl).instantiate(1, {})
    c = ctx(vars={"site": "x"}, elapsed=3.0, seq=4)
    out = inst.render(c)
    assert list(out) == ["f", "c", "label", "nested", "tt"]
    assert out["f"] == 50.0
    assert out["label"] == "x-d-1-1:50.0"
    assert out["nested"] == {"double_f": 100.0}
    assert out["tt"] == 7.0
    assert inst.last_error is None
    assert c.fields is out


def test_expression_cycle_is_a_compile_error_naming_fields() -> None:
    tpl = {
        "a": {"$gen": "expr", "expr": "b + 1"},
        "b": {"$gen": "expr", "expr": "c + 1"},
        "c": {"$gen": "expr", "expr": "a + 1"},
        "ok": 1,
    }
    with pytest.raises(ValueError, match=r"cycle: a -> b -> c -> a"):
        compile_template(tpl)
    with pytest.raises(ValueError, match="cycle: s -> s"):
        compile_template({"s": {"$gen": "expr", "expr": "s"}})


def test_expression_runtime_error_renders_none_and_reports() -> None:
    tpl = {"x": {"$gen": "sequence"}, "r": {"$gen": "expr", "expr": "10 / x"}}
    inst = compile_template(tpl).instantiate(1, {})
    c = ctx()
    first = inst.render(c)
    assert first == {"x": 0, "r": None}
    assert inst.last_error is not None and "payload.r" in inst.last_error
    second = inst.render(c)
    assert second == {"x": 1, "r": 10.0}
    assert inst.last_error is None


def test_generator_runtime_error_renders_none_and_reports() -> None:
    inst = compile_template({"v": {"$gen": "var", "name": "nope"}, "k": 1}).instantiate(1, {})
    assert inst.render(ctx(vars={"a": 1})) == {"v": None, "k": 1}
    assert inst.last_error is not None and "nope" in inst.last_error


# --------------------------------------------------------------------------- merging & states


def test_merge_override() -> None:
    base = {"a": 1, "b": {"c": 2, "d": {"$gen": "uuid"}}, "g": {"$gen": "uuid"}}
    over = {"b": {"c": 3, "e": 4}, "g": {"x": 1}, "n": 5}
    merged = merge_override(base, over)
    assert merged == {"a": 1, "b": {"c": 3, "d": {"$gen": "uuid"}, "e": 4}, "g": {"x": 1}, "n": 5}
    assert base["b"] == {"c": 2, "d": {"$gen": "uuid"}}  # inputs untouched
    assert merge_override({"a": 1}, [1]) == [1]
    assert merge_override({"a": {"b": 1}}, {"a": {"$gen": "uuid"}}) == {"a": {"$gen": "uuid"}}


STATEFUL_LOT: dict[str, Any] = {
    "seed": 3,
    "constants": {"site": "s1"},
    "variables": {"room": {"$gen": "choice", "options": ["a", "b"]}, "n": 4},
    "payload": {
        "template": {
            "count": {"$gen": "sequence"},
            "walk": {"$gen": "randomWalk", "start": 50, "min": 0, "max": 100},
            "ring": {"$gen": "bucket", "values": ["x", "y", "z"]},
            "status": "ok",
            "where": {"site": {"$gen": "var", "name": "site"}, "room": "?"},
        }
    },
    "initialState": "normal",
    "states": {
        "normal": {"transitions": [{"to": "error", "after": "1s"}]},
        "error": {
            "payload": {
                "status": "error",
                "code": {"$gen": "choice", "options": ["E1", "E2"]},
                "where": {"room": {"$gen": "var", "name": "room"}},
            },
            "transitions": [{"to": "normal", "after": "1s"}],
        },
    },
}


def test_state_override_keeps_stateful_generators_continuous() -> None:
    lot = lot_with(STATEFUL_LOT)
    states = compile_states(lot)
    assert set(states) == {"", "normal", "error"}
    assert "payload.count" in states["error"].node_ids
    assert "states.error.payload.code" in states["error"].node_ids
    assert "states.error.payload.where.room" in states["error"].node_ids
    assert "payload.where.site" in states["error"].node_ids

    seed = device_seed(lot.spec.seed, 0)
    variables = render_variables(lot, seed, 0, "tlot-00000")
    shared: dict[str, Generator] = {}
    inst = {name: c.instantiate(seed, shared) for name, c in states.items()}
    c = ctx(vars=variables)
    path = ["normal", "normal", "error", "error", "normal", "error", "normal"]
    mixed = []
    for state in path:
        c.state = state
        mixed.append(inst[state].render(c))
    assert [m["count"] for m in mixed] == list(range(len(path)))
    assert [m["ring"] for m in mixed] == ["x", "y", "z", "x", "y", "z", "x"]
    assert mixed[2]["status"] == "error" and mixed[2]["code"] in {"E1", "E2"}
    assert mixed[2]["where"] == {"site": "s1", "room": variables["room"]}
    assert mixed[0]["where"] == {"site": "s1", "room": "?"}
    # the walk continues as one series: identical to a device that never changed state
    plain = compile_template(lot.spec.payload.template).instantiate(seed, {})
    c2 = ctx(vars=variables)
    assert [plain.render(c2)["walk"] for _ in path] == [m["walk"] for m in mixed]


def test_compile_states_without_states_has_default() -> None:
    lot = lot_with({"payload": {"template": {"a": {"$gen": "sequence"}}}})
    assert set(compile_states(lot)) == {""}


def test_compile_states_rejects_unknown_names() -> None:
    lot = lot_with({"payload": {"template": {"a": {"$gen": "var", "name": "ghost"}}}})
    with pytest.raises(ValueError, match=r"payload\.a: unknown variable 'ghost'"):
        compile_states(lot)
    lot = lot_with({"payload": {"template": {"a": {"$gen": "expr", "expr": "b + zz"}, "b": 1}}})
    with pytest.raises(ValueError, match=r"payload.a: expression uses unknown name\(s\) zz"):
        compile_states(lot)
    lot = lot_with({"payload": {"template": {"a": {"$gen": "format", "template": "{nope}"}}}})
    with pytest.raises(ValueError, match=r"payload.a: template uses unknown name \{nope\}"):
        compile_states(lot)


def test_render_variables_once_per_device_and_deterministic() -> None:
    lot = lot_with(
        {
            "seed": 9,
            "constants": {"model": "M"},
            "variables": {
                "serial": {"$gen": "format", "template": "{model}-{index:04d}"},
                "cal": {"$gen": "uniform", "min": 0.9, "max": 1.1, "round": 3},
                "loc": {"lat": {"$gen": "uniform", "min": 40, "max": 41}, "fixed": 1},
                "plain": [1, 2],
                "twice": {"$gen": "expr", "expr": "cal * 2"},
            },
        }
    )
    seeds = [device_seed(9, i) for i in range(3)]
    v0 = render_variables(lot, seeds[0], 0, "tlot-00000")
    assert v0["model"] == "M" and v0["serial"] == "M-0000" and v0["plain"] == [1, 2]
    assert 0.9 <= v0["cal"] <= 1.1 and v0["twice"] == pytest.approx(v0["cal"] * 2)
    assert 40 <= v0["loc"]["lat"] <= 41 and v0["loc"]["fixed"] == 1
    assert render_variables(lot, seeds[0], 0, "tlot-00000") == v0
    v1 = render_variables(lot, seeds[1], 1, "tlot-00001")
    assert v1["serial"] == "M-0001" and v1["cal"] != v0["cal"]


def test_example_lot_renders() -> None:
    from pathlib import Path

    from mockfleet.mock.lot import load_lot

    lot = load_lot(Path(__file__).resolve().parent.parent / "examples" / "thermostats.yaml")
    states = compile_states(lot)
    seed = device_seed(lot.spec.seed, 0)
    variables = render_variables(lot, seed, 0, lot.device_id(0))
    inst = states["normal"].instantiate(seed, {})
    out = inst.render(ctx(vars=variables, now=1_700_000_000.0))
    assert inst.last_error is None
    assert out["temperature_f"] == round(out["temperature"] * 9 / 5 + 32, 2)
    assert out["ts"] == "2023-11-14T22:13:20.000Z"
