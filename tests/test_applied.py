"""Applying children: keys the builders stop producing are removed, others' fields stay."""

from __future__ import annotations

import copy
import json
from typing import Any

from mockfleet.mock.lot import parse_lot
from mockfleet.operator.applied import (
    APPLIED_ANNOTATION,
    apply_patch,
    merge,
    recorded_shape,
    removals,
    shape,
    with_shape,
)
from mockfleet.operator.builders import build_tower_daemonset
from mockfleet.operator.kube import is_subset
from mockfleet.operator.settings import OperatorSettings


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies application/merge-patch+json."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def daemonset(**tower: Any) -> dict[str, Any]:
    lot = parse_lot(
        {
            "apiVersion": "mockfleet.dev/v1alpha1",
            "kind": "MockLot",
            "metadata": {"name": "meters", "namespace": "iot"},
            "spec": {"devices": 10, "tower": tower},
        }
    )
    return build_tower_daemonset(lot, OperatorSettings())


def server_side(applied: dict[str, Any]) -> dict[str, Any]:
    """What a server holds after storing ``applied``: plus its own fields and others'."""
    stored = copy.deepcopy(applied)
    stored["metadata"].update(uid="u-1", resourceVersion="7", generation=2)
    stored["metadata"].setdefault("annotations", {})["deprecated.daemonset.template.generation"] = (
        "2"
    )
    stored["spec"]["revisionHistoryLimit"] = 10  # a server default
    stored["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = "/dev/x"
    stored["status"] = {"numberReady": 3}
    return stored


def test_shape_keeps_keys_not_values() -> None:
    assert shape({"a": {"b": "x", "c": [1, {"d": 2}]}, "e": None}) == {
        "a": {"b": 1, "c": [1, {"d": 1}]},
        "e": 1,
    }


def test_removed_tower_settings_are_nulled_and_nothing_else() -> None:
    full = with_shape(
        daemonset(
            nodeSelector={"pool": "load"},
            tolerations=[{"key": "load", "operator": "Exists"}],
            resources={"limits": {"memory": "1Gi"}, "requests": {"cpu": "1"}},
            affinity={"nodeAffinity": {"x": 1}},
        )
    )
    stored = server_side(full)
    slim = with_shape(daemonset(resources={"requests": {"cpu": "1"}}))
    # A key dropped inside a list item (the container's limits) is a change too.
    assert not is_subset(slim, stored)
    patch = apply_patch(slim, stored)
    pod_patch = patch["spec"]["template"]["spec"]
    assert pod_patch["nodeSelector"] is None
    assert pod_patch["tolerations"] is None
    assert pod_patch["affinity"] is None
    after = merge_patch(stored, patch)
    pod = after["spec"]["template"]["spec"]
    assert {"nodeSelector", "tolerations", "affinity"}.isdisjoint(pod)
    assert pod["containers"][0]["resources"] == {"requests": {"cpu": "1"}}
    # Server and others' fields are untouched (the container list is ours, replaced whole).
    assert after["status"] == {"numberReady": 3}
    assert after["spec"]["revisionHistoryLimit"] == 10
    assert after["metadata"]["uid"] == "u-1"
    assert after["metadata"]["annotations"]["deprecated.daemonset.template.generation"] == "2"
    # The record now describes the slim object; applying it again is a no-op.
    assert recorded_shape(after) == json.loads(slim["metadata"]["annotations"][APPLIED_ANNOTATION])
    assert is_subset(slim, after)
    assert removals(recorded_shape(after) or {}, slim) == {}


def test_an_unchanged_child_needs_no_write() -> None:
    desired = with_shape(daemonset(nodeSelector={"pool": "load"}))
    assert is_subset(desired, server_side(desired))


def test_without_a_record_nothing_is_removed() -> None:
    legacy = server_side(daemonset(nodeSelector={"pool": "load"}))
    assert recorded_shape(legacy) is None
    slim = with_shape(daemonset())
    patch = apply_patch(slim, legacy)
    assert patch == slim  # just the desired state, recording its shape for next time
    garbled = merge(legacy, {"metadata": {"annotations": {APPLIED_ANNOTATION: "{oops"}}})
    assert recorded_shape(garbled) is None


def test_removed_labels_go_and_the_record_is_not_part_of_itself() -> None:
    before = with_shape({"metadata": {"name": "p", "labels": {"a": "1", "version": "2"}}})
    after = with_shape({"metadata": {"name": "p", "labels": {"a": "1"}}})
    recorded = json.loads(before["metadata"]["annotations"][APPLIED_ANNOTATION])
    assert APPLIED_ANNOTATION not in recorded["metadata"]["annotations"]
    assert apply_patch(after, before)["metadata"]["labels"] == {"a": "1", "version": None}
