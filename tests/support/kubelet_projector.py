"""Project files into a directory exactly as the kubelet does for a ConfigMap volume.

Layout after each call::

    DIR/..2026_11_26_21_00_00.123456789/<key>   the files of this version
    DIR/..data -> ..2026_11_26_21_00_00.123456789
    DIR/<key> -> ..data/<key>                   (created once, stay valid)

An update writes a new timestamped directory, creates ``..data_tmp`` pointing
at it, renames ``..data_tmp`` over ``..data`` (the atomic switch), fixes the
per-key links (added/removed keys), then deletes the old directory.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

DATA = "..data"
DATA_TMP = "..data_tmp"


def _timestamped_name(directory: Path) -> str:
    while True:
        now = time.time_ns()
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime(now // 10**9))
        name = f"..{stamp}.{now % 10**9:09d}"
        if not (directory / name).exists():
            return name


def project(directory: str | os.PathLike[str], files: dict[str, str]) -> str:
    """Atomically replace the projected content of ``directory`` with ``files``.

    Returns the new timestamped directory's name.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    old: str | None = os.readlink(d / DATA) if (d / DATA).is_symlink() else None
    old_keys = set(os.listdir(d / old)) if old else set()
    new = _timestamped_name(d)
    (d / new).mkdir(mode=0o755)
    for key, text in files.items():
        (d / new / key).write_text(text, encoding="utf-8")
        os.chmod(d / new / key, 0o444)
    with_tmp = d / DATA_TMP
    if with_tmp.is_symlink():
        with_tmp.unlink()
    os.symlink(new, with_tmp)
    os.rename(with_tmp, d / DATA)  # the atomic switch
    for key in files:
        if not (d / key).is_symlink():
            os.symlink(f"{DATA}/{key}", d / key)
    for key in old_keys - set(files):
        (d / key).unlink(missing_ok=True)
    if old:
        shutil.rmtree(d / old)
    return new
