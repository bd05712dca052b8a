"""Which tower (node) runs which devices: contiguous index ranges, stable over time.

A device is identified by its index, and its data depends only on (seed, index),
so moving a device restarts it elsewhere with the same identity. Moves are
still disruptive (a reconnect, a gap in its stream), hence the rules:

* a device keeps its node while the node is eligible and within capacity;
* scaling up adds new ranges; scaling down trims the highest indices;
* ranges of a node that disappeared go to the least-loaded remaining nodes;
* no node gets more than ``max_per_tower`` devices; what does not fit stays
  unassigned and is reported (see :func:`unassigned`).

Ranges are half-open ``(start, end)`` tuples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

Range = tuple[int, int]
Assignment = dict[str, list[Range]]


def normalise(ranges: Iterable[Sequence[int]]) -> list[Range]:
    """Sorted, merged, non-empty half-open ranges."""
    clean = sorted((int(r[0]), int(r[1])) for r in ranges if int(r[1]) > int(r[0]))
    merged: list[Range] = []
    for start, end in clean:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def count(ranges: Iterable[Range]) -> int:
    """How many indices the ranges cover (they must not overlap)."""
    return sum(end - start for start, end in ranges)


def _trim_to(ranges: list[Range], limit: int) -> list[Range]:
    """Keep the lowest ``limit`` indices of sorted ranges."""
    kept: list[Range] = []
    left = limit
    for start, end in ranges:
        if left <= 0:
            break
        take = min(end - start, left)
        kept.append((start, start + take))
        left -= take
    return kept


def _subtract(ranges: list[Range], taken: list[Range]) -> list[Range]:
    """``ranges`` minus ``taken`` (both sorted and merged)."""
    out: list[Range] = []
    for start, end in ranges:
        cursor = start
        for t_start, t_end in taken:
            if t_end <= cursor or t_start >= end:
                continue
            if t_start > cursor:
                out.append((cursor, t_start))
            cursor = max(cursor, t_end)
        if cursor < end:
            out.append((cursor, end))
    return out


def assign(
    devices: int,
    nodes: list[str],
    previous: Mapping[str, Iterable[Sequence[int]]],
    max_per_tower: int,
) -> Assignment:
    """Assign device indices ``[0, devices)`` to ``nodes`` (see the module doc for the rules).

    Every node in ``nodes`` appears in the result (possibly with no ranges);
    nodes not in ``nodes`` do not. Deterministic for equal inputs.
    """
    if devices < 0:
        raise ValueError(f"devices must be >= 0, got {devices}")
    if max_per_tower < 1:
        raise ValueError(f"max_per_tower must be >= 1, got {max_per_tower}")
    eligible = sorted(set(nodes))
    result: Assignment = {node: [] for node in eligible}
    if not eligible:
        return result

    # 1. Keep what still holds: clip to the new size and the capacity, never overlap.
    taken: list[Range] = []
    for node in eligible:
        ranges = [(s, min(e, devices)) for s, e in normalise(previous.get(node, ())) if s < devices]
        ranges = _trim_to(_subtract(ranges, taken), max_per_tower)
        result[node] = ranges
        taken = normalise([*taken, *ranges])

    # 2. Hand out the gaps, lowest index first, to the least-loaded node with room.
    # Filling nodes up to an even share first keeps the fleet balanced; beyond
    # that, capacity is the only limit.
    share = math.ceil(devices / len(eligible))
    for gap_start, gap_end in _subtract([(0, devices)], taken):
        cursor = gap_start
        while cursor < gap_end:
            loads = {node: count(result[node]) for node in eligible}
            room = [n for n in eligible if loads[n] < max_per_tower]
            if not room:
                return _merged(result)
            node = min(room, key=lambda n: (loads[n], n))
            limit = share - loads[node] if loads[node] < share else max_per_tower - loads[node]
            take = min(gap_end - cursor, limit, max_per_tower - loads[node])
            result[node] = normalise([*result[node], (cursor, cursor + take)])
            cursor += take
    return _merged(result)


def _merged(result: Assignment) -> Assignment:
    return {node: normalise(ranges) for node, ranges in result.items()}


def unassigned(devices: int, assignment: Mapping[str, Iterable[Range]]) -> list[Range]:
    """Index ranges in ``[0, devices)`` that no node runs."""
    taken = normalise(r for ranges in assignment.values() for r in ranges)
    return _subtract([(0, devices)], taken) if devices > 0 else []


def assigned_count(assignment: Mapping[str, Iterable[Range]]) -> int:
    """How many devices the assignment places on some node."""
    return sum(count(ranges) for ranges in assignment.values())
