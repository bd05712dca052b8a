"""fork_sibling(): a child of our parent (clone with CLONE_PARENT), with the
interpreter's own fork hooks run on both sides."""

from __future__ import annotations

import os
import sys

import pytest

from mockfleet.tower import sibling

pytestmark = pytest.mark.skipif(not sibling.available(), reason="clone(CLONE_PARENT) unknown here")


def test_the_sibling_is_reaped_by_the_grandparent_with_its_exit_code() -> None:
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:  # plays the zygote
        try:
            os.close(r)
            os.register_at_fork(after_in_child=lambda: os.write(w, b"hook "))
            pid = sibling.fork_sibling()
            if pid == 0:
                os.write(w, f"child {os.getpid()} {os.getppid()}\n".encode())
                os._exit(7)
            os.write(w, f"made {pid}\n".encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 4096):
        chunks.append(chunk)
    os.close(r)
    out = b"".join(chunks).decode()
    made = int(out.split("made ")[1].split()[0])
    child_line = out.split("child ")[1].split()
    assert int(child_line[0]) == made
    assert int(child_line[1]) == os.getpid()  # its parent is us, not the "zygote"
    assert "hook" in out  # os.register_at_fork callbacks ran in the child
    reaped = {}
    for _ in range(2):
        pid, status = os.waitpid(-1, 0)
        reaped[pid] = os.waitstatus_to_exitcode(status)
    assert reaped == {middle: 0, made: 7}


def test_it_is_on_unless_switched_off() -> None:
    code = "from mockfleet.tower import sibling; print(sibling.enabled())"
    import subprocess

    for value, expected in ((None, "True"), ("1", "True"), ("0", "False")):
        env = {k: v for k, v in os.environ.items() if k != "MOCKFLEET_CLONE_PARENT"}
        if value is not None:
            env["MOCKFLEET_CLONE_PARENT"] = value
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.stdout.strip() == expected, out.stderr


def test_a_refused_clone_switches_to_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A seccomp filter that refuses clone(CLONE_PARENT) (EPERM) must not fail
    every start: the zygote stops asking and double-forks instead."""
    import ctypes
    import errno

    def refused(_flags: int) -> int:
        ctypes.set_errno(errno.EPERM)
        return -1

    monkeypatch.setattr(sibling, "_CLONE", refused)
    with pytest.raises(PermissionError):
        sibling.fork_sibling()
    assert not sibling.available()
