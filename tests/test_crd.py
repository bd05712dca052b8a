"""The MockLot CRD: structural, in sync with the lot schema, and usable by kubectl."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mockfleet.operator.crd import CRD_NAME, build_crd, crd_yaml, structural

ROOT = Path(__file__).resolve().parent.parent
CRD_FILE = ROOT / "crds" / "mocklots.mockfleet.dev.yaml"
REGENERATE = "mockfleet crd > crds/mocklots.mockfleet.dev.yaml"
_ALLOWED_KEYS = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "format",
    "nullable",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
}


def structural_problems(node: Any, path: str = "") -> list[str]:
    """Violations of Kubernetes' structural-schema rules (the subset we can hit)."""
    problems: list[str] = []
    if not isinstance(node, dict):
        return [f"{path}: not a schema object"]
    for key in node:
        if key not in _ALLOWED_KEYS:
            problems.append(f"{path}: key {key!r} not allowed")
    free = node.get("x-kubernetes-int-or-string") or node.get(
        "x-kubernetes-preserve-unknown-fields"
    )
    if "type" not in node and not free:
        problems.append(f"{path}: no type")
    if node.get("x-kubernetes-int-or-string") and "type" in node:
        problems.append(f"{path}: int-or-string with a type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    if isinstance(node.get("additionalProperties"), bool):
        problems.append(f"{path}: boolean additionalProperties")
    for name, child in (node.get("properties") or {}).items():
        problems += structural_problems(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        problems += structural_problems(node["items"], f"{path}[]")
    if node.get("type") == "array" and "items" not in node:
        problems.append(f"{path}: array without items")
    for req in node.get("required") or []:
        if req not in (node.get("properties") or {}):
            problems.append(f"{path}: required {req!r} is not a property")
    return problems


def _version() -> dict[str, Any]:
    versions = build_crd()["spec"]["versions"]
    assert len(versions) == 1
    return versions[0]


def _schema() -> dict[str, Any]:
    return _version()["schema"]["openAPIV3Schema"]


def test_crd_schema_is_structural() -> None:
    assert structural_problems(_schema()) == []


def test_checker_catches_non_structural_nodes() -> None:
    bad = {
        "type": "object",
        "properties": {
            "a": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "b": {"$ref": "#/x"},
            "c": {"type": "object", "properties": {}, "additionalProperties": False},
        },
    }
    problems = structural_problems(bad)
    assert any(".a: key 'anyOf'" in p for p in problems)
    assert any(".a: no type" in p for p in problems)
    assert any(".b: key '$ref'" in p for p in problems)
    assert any(".c: properties and additionalProperties" in p for p in problems)


def test_committed_crd_matches_the_schema() -> None:
    assert CRD_FILE.read_text(encoding="utf-8") == crd_yaml(), (
        f"{CRD_FILE.name} is stale; regenerate it with: {REGENERATE}"
    )


def test_crd_command_prints_the_crd() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mockfleet.operator.entry", "crd"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert yaml.safe_load(out) == build_crd()


def test_names_scope_and_short_names() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == CRD_NAME == "mocklots.mockfleet.dev"
    spec = crd["spec"]
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "MockLot"
    assert "ml" in spec["names"]["shortNames"]
    assert _version()["name"] == "v1alpha1"


def test_printer_columns_read_conditions_by_type() -> None:
    columns = {c["name"]: c for c in _version()["additionalPrinterColumns"]}
    assert list(columns) == ["Devices", "Running", "Failed", "Towers", "Ready", "Age"]
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Devices"]["jsonPath"] == ".spec.devices"
    for column in columns.values():
        assert "conditions[0]" not in column["jsonPath"]


def test_status_and_scale_subresources() -> None:
    sub = _version()["subresources"]
    assert sub["status"] == {}
    assert sub["scale"]["specReplicasPath"] == ".spec.devices"
    assert sub["scale"]["statusReplicasPath"] == ".status.assigned"
    status = _schema()["properties"]["status"]["properties"]
    assert status["assigned"]["type"] == "integer"
    assert status["selector"]["type"] == "string"
    assert sub["scale"]["labelSelectorPath"] == ".status.selector"


def test_free_form_and_duration_fields() -> None:
    spec = _schema()["properties"]["spec"]["properties"]
    assert spec["payload"]["properties"]["template"]["x-kubernetes-preserve-unknown-fields"]
    assert spec["constants"]["x-kubernetes-preserve-unknown-fields"]
    assert spec["variables"]["x-kubernetes-preserve-unknown-fields"]
    assert spec["tower"]["properties"]["affinity"]["x-kubernetes-preserve-unknown-fields"]
    interval = spec["timing"]["properties"]["interval"]
    assert interval["x-kubernetes-int-or-string"] is True
    assert "anyOf" not in interval
    assert spec["timing"]["properties"]["duration"]["nullable"] is True


def test_sink_union_becomes_one_object_with_a_type_enum() -> None:
    sink = _schema()["properties"]["spec"]["properties"]["sink"]
    assert sink["type"] == "object"
    assert sink["required"] == ["type"]
    assert sink["properties"]["type"]["enum"] == ["stdout", "file", "http", "mqtt"]
    for field in ("url", "path", "host", "topic", "tls", "auth"):
        assert field in sink["properties"]


def test_exclusive_bounds_use_openapi_3_0_booleans() -> None:
    rate = _schema()["properties"]["spec"]["properties"]["tower"]["properties"]["maxStartRate"]
    assert rate["minimum"] == 0
    assert rate["exclusiveMinimum"] is True


def test_no_defaults_or_titles_leak_into_the_crd() -> None:
    text = yaml.safe_dump(_schema())
    assert "default:" not in text
    assert "title:" not in text
    assert "$ref" not in text


def test_unsupported_union_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unions of objects"):
        structural({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {})


def test_examples_validate_against_the_crd_schema() -> None:
    schema = _openapi_to_jsonschema(_schema())
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        jsonschema.validate(doc, schema)


def test_schema_rejects_a_wrong_type() -> None:
    schema = _openapi_to_jsonschema(_schema())
    doc = {"apiVersion": "mockfleet.dev/v1alpha1", "kind": "MockLot", "spec": {"devices": "ten"}}
    with pytest.raises(jsonschema.ValidationError, match="'ten' is not of type 'integer'"):
        jsonschema.validate(doc, schema)


def _openapi_to_jsonschema(node: Any) -> Any:
    """Kubernetes' OpenAPI dialect as draft-7 JSON Schema, for validating examples."""
    if isinstance(node, list):
        return [_openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi_to_jsonschema(v) for k, v in node.items() if not k.startswith("x-")}
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    out.pop("nullable", None)
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(exclusive) is True:
            out[exclusive] = out.pop(bound)
    if (
        out.get("type") == "object"
        and "properties" in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        # The API server prunes unknown fields; for examples, unknown means a typo.
        out["additionalProperties"] = False
    return out
