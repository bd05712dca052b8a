"""Device-range assignment: coverage, capacity, stability, balance."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mockfleet.operator.assignment import (
    Assignment,
    assign,
    assigned_count,
    normalise,
    unassigned,
)

NODES = st.lists(
    st.sampled_from([f"node-{i}" for i in range(8)]), min_size=0, max_size=6, unique=True
)


def owners(assignment: Assignment) -> dict[int, str]:
    """index -> node; fails on a double assignment."""
    seen: dict[int, str] = {}
    for node, ranges in assignment.items():
        for start, end in ranges:
            for i in range(start, end):
                assert i not in seen, f"device {i} on {seen[i]} and {node}"
                seen[i] = node
    return seen


@st.composite
def scenario(draw: st.DrawFn) -> tuple[int, list[str], Assignment, int]:
    """A previous assignment produced by assign() itself, plus a new request."""
    cap = draw(st.integers(1, 60))
    before = assign(draw(st.integers(0, 200)), draw(NODES), {}, cap)
    return draw(st.integers(0, 200)), draw(NODES), before, cap


def test_even_split_in_contiguous_ranges() -> None:
    result = assign(10, ["b", "a", "c"], {}, 2000)
    assert result == {"a": [(0, 4)], "b": [(4, 8)], "c": [(8, 10)]}


def test_scale_up_keeps_running_devices_in_place() -> None:
    before = assign(10, ["a", "b", "c"], {}, 2000)
    after = assign(16, ["a", "b", "c"], before, 2000)
    for node, ranges in before.items():
        for start, end in ranges:
            assert all(owners(after)[i] == node for i in range(start, end))
    assert assigned_count(after) == 16


def test_scale_down_trims_the_highest_indices() -> None:
    before = assign(12, ["a", "b", "c"], {}, 2000)
    after = assign(5, ["a", "b", "c"], before, 2000)
    assert owners(after) == {i: owners(before)[i] for i in range(5)}


def test_lost_node_ranges_go_to_the_least_loaded() -> None:
    before = {"a": [(0, 10)], "b": [(10, 12)], "c": [(12, 30)]}
    after = assign(30, ["a", "b"], before, 2000)
    # b (2 devices) takes c's devices up to an even share (15), a takes the rest.
    assert after == {"a": [(0, 10), (25, 30)], "b": [(10, 25)]}


def test_capacity_leaves_devices_unassigned_and_reports_them() -> None:
    result = assign(100, ["a", "b"], {}, 30)
    assert assigned_count(result) == 60
    assert unassigned(100, result) == [(60, 100)]


def test_capacity_shrink_trims_each_node() -> None:
    after = assign(20, ["a", "b"], {"a": [(0, 10)], "b": [(10, 20)]}, 4)
    assert after == {"a": [(0, 4)], "b": [(10, 14)]}


def test_no_nodes_means_nothing_assigned() -> None:
    assert assign(5, [], {"gone": [(0, 5)]}, 10) == {}
    assert unassigned(5, {}) == [(0, 5)]


def test_overlapping_previous_ranges_are_not_doubled() -> None:
    result = assign(10, ["a", "b"], {"a": [(0, 6)], "b": [(3, 10)]}, 100)
    assert owners(result) == {**{i: "a" for i in range(6)}, **{i: "b" for i in range(6, 10)}}


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="devices must be >= 0"):
        assign(-1, ["a"], {}, 1)
    with pytest.raises(ValueError, match="max_per_tower must be >= 1"):
        assign(1, ["a"], {}, 0)


def test_normalise_merges_and_sorts() -> None:
    assert normalise([(5, 7), (0, 2), (2, 3), (6, 9), (4, 4)]) == [(0, 3), (5, 9)]


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_each_device_at_most_once_and_all_when_capacity_allows(
    case: tuple[int, list[str], Assignment, int],
) -> None:
    devices, nodes, before, cap = case
    result = assign(devices, nodes, before, cap)
    got = owners(result)
    assert set(result) == set(nodes)
    assert all(0 <= i < devices for i in got)
    assert all(assigned_count({n: r}) <= cap for n, r in result.items())
    expected = min(devices, cap * len(nodes))
    assert len(got) == expected
    assert assigned_count(result) + sum(e - s for s, e in unassigned(devices, result)) == devices


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_stability_devices_keep_their_node(case: tuple[int, list[str], Assignment, int]) -> None:
    devices, nodes, before, cap = case
    result = assign(devices, nodes, before, cap)
    now = owners(result)
    for i, node in owners(before).items():
        if i < devices and node in nodes:
            # Capacity is unchanged, so a device whose node survives never moves.
            assert now.get(i) == node


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 500), NODES, st.integers(1, 100))
def test_fresh_assignment_is_balanced_and_deterministic(
    devices: int, nodes: list[str], cap: int
) -> None:
    result = assign(devices, nodes, {}, cap)
    assert result == assign(devices, list(reversed(nodes)), {}, cap)
    loads = [assigned_count({n: r}) for n, r in result.items()]
    if loads and devices <= cap * len(nodes):
        assert max(loads) - min(loads) <= max(1, -(-devices // len(nodes)))
        for ranges in result.values():
            assert len(ranges) <= 1  # one contiguous range per node
