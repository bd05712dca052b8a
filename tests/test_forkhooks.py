"""The zygote's lighter threading after-fork hook: a child of a lone thread
skips the clean-up, a child of a process with threads still gets it, and in
both the child's threading module works (real forks, in a fresh interpreter:
the hook is process-wide)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from mockfleet.tower import forkhooks

pytestmark = pytest.mark.skipif(
    sys.implementation.name != "cpython" or sys.version_info[:2] not in forkhooks.VERIFIED,
    reason="the guard is installed only on the CPython versions it was checked against",
)

CHILD_CHECKS = """
import os, threading

def child_checks(expect_full):
    main = threading.main_thread()
    assert threading.current_thread() is main, "the child's thread is not the main thread"
    assert threading.enumerate() == [main], threading.enumerate()
    assert main.ident == threading.get_ident()
    assert main.is_alive()
    ran = []
    t = threading.Thread(target=lambda: ran.append(1))
    t.start()
    t.join(10)
    assert ran == [1] and not t.is_alive(), "a new thread in the child did not run"
    assert (CALLS[0] == 1) == expect_full, f"full clean-up ran {CALLS[0]} times"

def fork_and_check(expect_full):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child_checks(expect_full)
        except BaseException as exc:
            print("child:", repr(exc), flush=True)
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's checks failed"
"""


def run(body: str) -> str:
    script = CHILD_CHECKS + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


INSTALL = """
from mockfleet.tower.forkhooks import skip_threading_after_fork_when_alone
assert skip_threading_after_fork_when_alone()
assert skip_threading_after_fork_when_alone(), "a second install must be harmless"
assert threading._after_fork.__code__.co_filename == "<mockfleet.tower.forkhooks>"
CALLS = [0]
full = threading._mockfleet_full_after_fork
def counting():
    CALLS[0] += 1
    full()
threading._mockfleet_full_after_fork = counting
"""


def test_a_child_of_a_lone_thread_skips_the_clean_up_and_threading_still_works() -> None:
    run(INSTALL + "fork_and_check(expect_full=False)\nprint('ok')\n")


def test_a_child_of_a_process_with_threads_gets_the_full_clean_up() -> None:
    run(
        INSTALL
        + """
release = threading.Event()
worker = threading.Thread(target=release.wait, daemon=True)
worker.start()
try:
    fork_and_check(expect_full=True)
finally:
    release.set()
    worker.join(10)
# that thread has ended: the next child is a lone thread's again
fork_and_check(expect_full=False)
"""
    )


def test_not_installed_where_the_hook_was_not_checked() -> None:
    run(
        """
from mockfleet.tower import forkhooks
forkhooks.VERIFIED = ()
original = threading._after_fork.__code__
assert forkhooks.skip_threading_after_fork_when_alone() is False
assert threading._after_fork.__code__ is original
assert not hasattr(threading, "_mockfleet_full_after_fork")
CALLS = [0]
"""
    )


def test_a_process_without_threading_does_not_get_it_and_gets_the_guard_once_it_has_it() -> None:
    script = """
import sys
assert "threading" not in sys.modules, "the interpreter started with threading"
from mockfleet.tower import forkhooks, immortal, prefork, zygote
assert "threading" not in sys.modules, "importing the zygote's modules imported threading"
assert forkhooks.skip_threading_after_fork_when_alone() is False
assert "threading" not in sys.modules, "the guard imported threading"
import threading
assert forkhooks.skip_threading_after_fork_when_alone() is True
assert threading._after_fork.__code__.co_filename == "<mockfleet.tower.forkhooks>"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr
