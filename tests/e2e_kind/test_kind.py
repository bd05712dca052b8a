"""End to end on a real cluster (kind): skipped unless MOCKFLEET_E2E_KIND=1 and kubectl works.

Set-up is in docs/kubernetes.md (build, kind load, helm install).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e_kind


def _kubectl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", *args], capture_output=True, text=True, timeout=120, check=check
    )


@pytest.fixture(scope="module")
def cluster() -> None:
    if os.environ.get("MOCKFLEET_E2E_KIND") != "1":
        pytest.skip("set MOCKFLEET_E2E_KIND=1 with a kind cluster set up (docs/kubernetes.md)")
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH")
    if _kubectl("get", "--raw", "/readyz", check=False).returncode != 0:
        pytest.skip("no reachable Kubernetes API (kubectl get --raw /readyz failed)")


def test_lot_becomes_ready_and_scales(cluster: None) -> None:
    _kubectl("apply", "-f", str(ROOT / "examples" / "thermostats.yaml"))
    try:
        _kubectl("wait", "mocklot/thermostats", "--for=condition=DevicesAssigned", "--timeout=120s")
        _kubectl("wait", "mocklot/thermostats", "--for=condition=Ready", "--timeout=300s")
        _kubectl("scale", "mocklot/thermostats", "--replicas=80")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            lot = json.loads(_kubectl("get", "mocklot/thermostats", "-o", "json").stdout)
            if lot.get("status", {}).get("assigned") == 80:
                break
            time.sleep(2)
        else:
            pytest.fail("status.assigned never reached 80 after scaling")
    finally:
        _kubectl("delete", "-f", str(ROOT / "examples" / "thermostats.yaml"), check=False)
