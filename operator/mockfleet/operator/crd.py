"""The MockLot CustomResourceDefinition, generated from the pydantic lot schema.

Kubernetes only accepts *structural* schemas: every node has a ``type`` (or is
int-or-string / preserve-unknown-fields), no ``$ref``, no per-branch types in
``anyOf``/``oneOf``, no ``additionalProperties`` beside ``properties``. Pydantic
emits plain JSON Schema, so :func:`structural` rewrites it. The CRD is a coarse
gate (types, enums, bounds); the operator re-validates every lot with pydantic,
which stays the single strict source of truth.

Regenerate the committed file with ``mockfleet crd > crds/mocklots.mockfleet.dev.yaml``.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from mockfleet.mock.lot import API_GROUP, API_VERSION, KIND, LotSpec

PLURAL = "mocklots"
SINGULAR = "mocklot"
SHORT_NAMES = ["ml", "lot"]
CRD_NAME = f"{PLURAL}.{API_GROUP}"

#: Keys that are valid JSON Schema but not part of Kubernetes' OpenAPI v3 subset,
#: or that would make the API server default/alter stored lots behind pydantic's back.
_DROP_KEYS = {"title", "default", "examples", "discriminator", "$schema", "const"}
_INT_OR_STRING = "x-kubernetes-int-or-string"
_PRESERVE = "x-kubernetes-preserve-unknown-fields"


class SchemaError(ValueError):
    """The pydantic schema has a construct we cannot express structurally."""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    name = ref.rsplit("/", 1)[-1]
    if name not in defs:
        raise SchemaError(f"unresolvable $ref {ref!r}")
    # Sibling keys of a $ref (description) win over the definition's own.
    merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
    return merged


def _is_null(node: dict[str, Any]) -> bool:
    return node.get("type") == "null"


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one pydantic JSON-schema node (and its children) into a structural one."""
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    nullable = False

    for key in ("anyOf", "oneOf"):
        branches = node.get(key)
        if branches is None:
            continue
        non_null = [b for b in branches if not _is_null(b)]
        nullable = nullable or len(non_null) != len(branches)
        rest = {k: v for k, v in node.items() if k != key}
        if node.get(_INT_OR_STRING):
            # Already "integer or string": the extension replaces the anyOf.
            out = structural({k: v for k, v in rest.items()}, defs)
            break
        if len(non_null) == 1:
            inner = _resolve(non_null[0], defs)
            out = structural({**inner, **{k: v for k, v in rest.items() if k != "anyOf"}}, defs)
            break
        out = _merge_objects([structural(b, defs) for b in non_null], rest)
        break
    else:
        out = _plain(node, defs)

    if nullable:
        out["nullable"] = True
    return out


def _plain(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS or key in {"properties", "items", "additionalProperties", "required"}:
            continue
        out[key] = copy.deepcopy(value)
    if "const" in node:
        out["enum"] = [node["const"]]
    # JSON Schema's numeric exclusive bounds are OpenAPI 3.0 booleans beside minimum/maximum.
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[bound] = value
            out[exclusive] = True
    if node.get(_INT_OR_STRING) or (node.get(_PRESERVE) and "type" not in node):
        out.pop("type", None)
        return out
    if "enum" in out and "type" not in out:
        types = {type(v) for v in out["enum"]}
        out["type"] = {str: "string", int: "integer", bool: "boolean"}.get(types.pop(), "string")
    node_type = out.get("type")
    if node_type is None:
        raise SchemaError(f"schema node without a type: {sorted(node)}")
    if node_type == "object":
        props = node.get("properties")
        if props is not None:
            out["properties"] = {k: structural(v, defs) for k, v in props.items()}
            if node.get("required"):
                out["required"] = list(node["required"])
        else:
            extra = node.get("additionalProperties")
            if isinstance(extra, dict):
                out["additionalProperties"] = structural(extra, defs)
            elif not out.get(_PRESERVE):
                # A free-form object; keep its content instead of pruning it.
                out[_PRESERVE] = True
    elif node_type == "array":
        out["items"] = structural(node.get("items", {_PRESERVE: True}), defs)
    return out


def _merge_objects(branches: list[dict[str, Any]], rest: dict[str, Any]) -> dict[str, Any]:
    """A union of object branches (e.g. sink types) as one object with all properties.

    Structural schemas cannot give branches their own types, so the merged object
    carries every branch's properties; a property whose schemas differ between
    branches keeps only what they share (or becomes free-form). The union's
    discriminator becomes a plain enum.
    """
    if not all(b.get("type") == "object" for b in branches):
        raise SchemaError("only unions of objects (or of one type with null) are supported")
    props: dict[str, Any] = {}
    for branch in branches:
        for name, schema in branch.get("properties", {}).items():
            if name not in props:
                props[name] = schema
            elif props[name] != schema:
                props[name] = _widen(props[name], schema)
    required = set.intersection(*(set(b.get("required", [])) for b in branches))
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = sorted(required)
    if "description" in rest:
        out["description"] = rest["description"]
    return out


def _widen(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    if "enum" in a and "enum" in b and a.get("type") == b.get("type"):
        merged = {**a, "enum": list(dict.fromkeys([*a["enum"], *b["enum"]]))}
        merged.pop("description", None)
        return merged
    strip = {"description", "nullable"}
    if {k: v for k, v in a.items() if k not in strip} == {
        k: v for k, v in b.items() if k not in strip
    }:
        merged = {**a}
        merged.pop("description", None)
        if a.get("nullable") or b.get("nullable"):
            merged["nullable"] = True
        return merged
    return {_PRESERVE: True, "nullable": True}


def spec_schema() -> dict[str, Any]:
    """The structural schema of ``spec`` (a :class:`LotSpec`)."""
    raw = LotSpec.model_json_schema(mode="validation")
    defs = raw.pop("$defs", {})
    return structural(raw, defs)


def status_schema() -> dict[str, Any]:
    """What the operator writes to ``.status`` (kept open for forward compatibility)."""
    count = {"type": "integer", "minimum": 0}
    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer"},
        },
    }
    return {
        "type": "object",
        _PRESERVE: True,
        "properties": {
            "observedGeneration": {"type": "integer"},
            "desired": {**count, "description": "spec.devices"},
            "assigned": {**count, "description": "Devices given to a tower."},
            "unassigned": {**count, "description": "Devices beyond the towers' capacity."},
            "running": {**count, "description": "Device processes alive."},
            "failed": count,
            "succeeded": count,
            "messages": {**count, "description": "Messages sent (sum over towers)."},
            "towers": {**count, "description": "Towers reporting."},
            "selector": {"type": "string", "description": "Tower pods' label selector."},
            "conditions": {
                "type": "array",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        },
    }


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Devices", "type": "integer", "jsonPath": ".spec.devices"},
    {"name": "Running", "type": "integer", "jsonPath": ".status.running"},
    {"name": "Failed", "type": "integer", "jsonPath": ".status.failed"},
    {"name": "Towers", "type": "integer", "jsonPath": ".status.towers"},
    # Conditions are a map keyed by type: never index them by position.
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def build_crd() -> dict[str, Any]:
    """The complete ``apiextensions.k8s.io/v1`` CustomResourceDefinition for MockLot."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "mockfleet",
                "app.kubernetes.io/part-of": "mockfleet",
            },
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["mockfleet"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A lot of simulated IoT devices run by towers.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.devices",
                            "statusReplicasPath": ".status.assigned",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": copy.deepcopy(PRINTER_COLUMNS),
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as the YAML committed under ``crds/`` (stable key order)."""
    header = "# Generated by `mockfleet crd` from the pydantic lot schema. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)
