"""Sink credentials on Kubernetes: ``spec.tower.env`` and ``spec.tower.secretVolumes``.

The lot schema checks them, the builders put them on the tower container (and
nowhere else), the result is a valid DaemonSet, the documented example is a
valid lot and CRD object, and devices really see the tower's environment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from support.recording_http import RecordingServer
from test_crd import _openapi_to_jsonschema

from mockfleet.mock.lot import TOWER_OWN_ENV, LotError, MockLot, parse_lot
from mockfleet.operator.builders import build_plan_configmap, build_tower_daemonset
from mockfleet.operator.crd import build_crd
from mockfleet.operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "kubernetes.md"
K8S_VERSION = "1.32.0"
TOKEN_REF = {"secretKeyRef": {"name": "backend-token", "key": "token"}}


def doc(tower: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mockfleet.dev/v1alpha1",
        "kind": "MockLot",
        "metadata": {"name": "meters", "namespace": "iot"},
        "spec": {"devices": 10, "tower": tower, **spec},
    }


def make_lot(tower: dict[str, Any], **spec: Any) -> MockLot:
    return parse_lot(doc(tower, **spec))


def problems(tower: dict[str, Any]) -> str:
    with pytest.raises(LotError) as caught:
        make_lot(tower)
    return "\n".join(caught.value.problems)


@pytest.mark.parametrize(
    ("tower", "expected"),
    [
        (
            {"env": [{"name": "1TOKEN", "value": "x"}]},
            "spec.tower.env.0.name: '1TOKEN' must be letters, digits and '_'",
        ),
        (
            {"env": [{"name": "NODE_NAME", "value": "x"}]},
            "'NODE_NAME' is reserved for the tower itself",
        ),
        ({"env": [{"name": "MOCKFLEET_TOWER_VERSION", "value": "x"}]}, "is reserved"),
        ({"env": [{"name": "PYTHONPATH", "value": "/x"}]}, "is reserved"),
        ({"env": [{"name": "TOKEN"}]}, "env 'TOKEN' needs exactly one of value and valueFrom"),
        (
            {"env": [{"name": "TOKEN", "value": "x", "valueFrom": TOKEN_REF}]},
            "exactly one of value and valueFrom",
        ),
        (
            {"env": [{"name": "T", "value": "1"}, {"name": "T", "value": "2"}]},
            "env.1.name: 'T' is given twice",
        ),
        (
            {
                "env": [
                    {"name": "T", "valueFrom": {"secretKeyRef": {"name": "Bad_Name", "key": "k"}}}
                ]
            },
            "secretKeyRef.name: 'Bad_Name' must be a Secret name",
        ),
        (
            {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "a b"}}}]},
            "secretKeyRef.key: 'a b' must be a Secret key",
        ),
        (
            {"env": [{"name": "T", "valueFrom": {"configMapKeyRef": {"name": "s", "key": "k"}}}]},
            "valueFrom.configMapKeyRef: unknown field",
        ),
        (
            {"secretVolumes": [{"secretName": "s", "mountPath": "etc/creds"}]},
            "mountPath 'etc/creds' must be an absolute path",
        ),
        (
            {"secretVolumes": [{"secretName": "s", "mountPath": "/etc/creds/"}]},
            "must be a plain directory below /",
        ),
        (
            {"secretVolumes": [{"secretName": "s", "mountPath": "/etc/../tmp"}]},
            "must be a plain directory below /",
        ),
        (
            {"secretVolumes": [{"secretName": "s", "mountPath": "/"}]},
            "must be a plain directory below /",
        ),
        (
            {"secretVolumes": [{"secretName": "s", "mountPath": "/etc/mockfleet/plan"}]},
            "overlaps the tower's own mount /etc/mockfleet/plan",
        ),
        (
            {"secretVolumes": [{"secretName": "s", "mountPath": "/var/lib"}]},
            "overlaps the tower's own mount /var/lib/mockfleet",
        ),
        (
            {"secretVolumes": [{"secretName": "s", "mountPath": "/tmp/creds"}]},
            "overlaps the tower's own mount /tmp",
        ),
        (
            {
                "secretVolumes": [
                    {"secretName": "a", "mountPath": "/etc/creds"},
                    {"secretName": "b", "mountPath": "/etc/creds/b"},
                ]
            },
            "secretVolumes.1.mountPath: '/etc/creds/b' overlaps secretVolumes.0.mountPath",
        ),
    ],
)
def test_bad_env_and_volumes_are_clear_errors(tower: dict[str, Any], expected: str) -> None:
    assert expected in problems(tower)


def test_neighbouring_paths_are_not_overlaps() -> None:
    lot = make_lot(
        {
            "secretVolumes": [
                {"secretName": "a", "mountPath": "/etc/mockfleet/secrets/a"},
                {"secretName": "b", "mountPath": "/etc/mockfleet/secrets/ab"},
                {"secretName": "c", "mountPath": "/tmpfiles"},
            ]
        }
    )
    assert len(lot.spec.tower.secretVolumes) == 3


def credentials_lot() -> MockLot:
    return make_lot(
        {
            "env": [
                {"name": "BACKEND_TOKEN", "valueFrom": TOKEN_REF},
                {"name": "TZ", "value": "UTC"},
            ],
            "secretVolumes": [
                {"secretName": "backend-ca", "mountPath": "/etc/mockfleet/secrets/ca"},
                {"secretName": "client-cert", "mountPath": "/etc/mockfleet/secrets/client"},
            ],
        },
        sink={
            "type": "http",
            "url": "https://backend.example/ingest",
            "auth": {"type": "bearer", "tokenEnv": "BACKEND_TOKEN"},
            "tls": {"caFile": "/etc/mockfleet/secrets/ca/ca.crt"},
        },
    )


def test_daemonset_carries_env_and_read_only_secret_volumes() -> None:
    ds = build_tower_daemonset(credentials_lot(), OperatorSettings())
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    names = [e["name"] for e in container["env"]]
    # The tower's own first, the lot's after; the schema keeps the two apart.
    assert tuple(names[: len(TOWER_OWN_ENV)]) == TOWER_OWN_ENV
    assert container["env"][len(TOWER_OWN_ENV) :] == [
        {"name": "BACKEND_TOKEN", "valueFrom": TOKEN_REF},
        {"name": "TZ", "value": "UTC"},
    ]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path, secret in (
        ("/etc/mockfleet/secrets/ca", "backend-ca"),
        ("/etc/mockfleet/secrets/client", "client-cert"),
    ):
        assert mounts[path]["readOnly"] is True
        source = volumes[mounts[path]["name"]]["secret"]
        assert source == {"secretName": secret, "defaultMode": 0o440}
    assert len(volumes) == len(pod["volumes"])  # volume names are distinct
    # Readable by the tower: the volume's group is the pod's fsGroup, the tower's group.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    kubernetes_validate.validate(ds, K8S_VERSION, strict=True)


def test_without_credentials_the_daemonset_is_unchanged() -> None:
    plain = build_tower_daemonset(make_lot({}), OperatorSettings())
    (container,) = plain["spec"]["template"]["spec"]["containers"]
    assert [e["name"] for e in container["env"]] == list(TOWER_OWN_ENV)
    assert not any(
        v["name"].startswith("secret-") for v in plain["spec"]["template"]["spec"]["volumes"]
    )


def test_credentials_stay_out_of_the_plan() -> None:
    lot = credentials_lot()
    cm = build_plan_configmap(lot, {"n1": [(0, 10)]})
    text = json.dumps(cm)
    # The sink still names its variable and file (names, not secrets); the pod settings
    # that say where they come from are not there.
    for word in ("secretKeyRef", "backend-token", "backend-ca", "client-cert", "UTC"):
        assert word not in text, word
    tower = yaml.safe_load(cm["data"]["lot.yaml"])["spec"]["tower"]
    assert "env" not in tower and "secretVolumes" not in tower
    # What towers read is still a valid lot, the same apart from the pod settings.
    again = parse_lot(yaml.safe_load(cm["data"]["lot.yaml"]))
    assert again.spec.sink == lot.spec.sink
    assert again.spec.tower.env == [] and again.spec.tower.secretVolumes == []


def documented_example() -> dict[str, Any]:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    (example,) = [b for b in blocks if "secretVolumes" in b]
    return dict(yaml.safe_load(example))


def test_the_documented_example_is_a_valid_lot_and_crd_object() -> None:
    example = documented_example()
    lot = parse_lot(example)
    assert lot.spec.tower.env[0].valueFrom is not None
    assert lot.spec.tower.secretVolumes[0].mountPath.startswith("/etc/mockfleet/secrets/")
    schema = _openapi_to_jsonschema(build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    jsonschema.validate(example, schema)
    kubernetes_validate.validate(
        build_tower_daemonset(lot, OperatorSettings()), K8S_VERSION, strict=True
    )


def test_the_crd_rejects_what_it_can() -> None:
    schema = _openapi_to_jsonschema(build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    bad_name = doc({"env": [{"name": "1X", "value": "v"}]})
    with pytest.raises(jsonschema.ValidationError, match="does not match"):
        jsonschema.validate(bad_name, schema)
    relative = doc({"secretVolumes": [{"secretName": "s", "mountPath": "creds"}]})
    with pytest.raises(jsonschema.ValidationError, match="does not match"):
        jsonschema.validate(relative, schema)


def test_devices_inherit_the_towers_environment(
    tmp_path: Path, http_server: RecordingServer
) -> None:
    """The variables Kubernetes puts on the tower reach every device: the tower starts
    the zygote with its environment and the zygote forks the devices."""
    lot = doc(
        {},
        devices=3,
        timing={"interval": "100ms", "maxMessages": 2},
        sink={
            "type": "http",
            "url": http_server.url("/in/{id}"),
            "auth": {"type": "bearer", "tokenEnv": "BACKEND_TOKEN"},
        },
    )
    path = tmp_path / "lot.yaml"
    path.write_text(yaml.safe_dump(lot), encoding="utf-8")
    env = {**os.environ, "BACKEND_TOKEN": "s3cr3t-from-the-pod"}
    run = [sys.executable, "-m", "mockfleet.operator.entry", "run", str(path)]
    done = subprocess.run(
        [*run, "--receiver", "off", "--plain", "--workdir", str(tmp_path / "work")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "s3cr3t" not in done.stdout + done.stderr  # never logged
    seen = {r.path: r.headers.get("Authorization") for r in http_server.requests}
    assert sorted(seen) == [f"/in/meters-0000{i}" for i in range(3)]
    assert set(seen.values()) == {"Bearer s3cr3t-from-the-pod"}
