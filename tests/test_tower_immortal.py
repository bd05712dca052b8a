"""The zygote's objects made immortal before it forks (CPython 3.12 and 3.13).

The behaviour needs CPython 3.12 or 3.13; the suite itself may run on
3.11. The module uses only the standard library, so these tests run it by
path under each of those this machine has (on PATH as python3.12 or
python3.13, or installed by pyenv), and each is skipped, saying so, when
it is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from mockfleet.tower import immortal

MODULE = Path(immortal.__file__)

#: Run under the newer interpreter: prepare objects, immortalize them (unless
#: told not to), freeze, then fork a child that reads every object, and report.
SCRIPT = r"""
import gc, importlib.util, json, os, sys, weakref

spec = importlib.util.spec_from_file_location("immortal", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)

class Thing:
    pass

data = [float(i) + 0.5 for i in range(50_000)]  # distinct objects, about 300 pages

def reader():
    total = 0.0
    for x in data:
        total += x
    return total

reader()
in_hand = [{"request": "-".join(map(str, range(20)))}]  # kept mortal, with what only it holds
gc.collect()
keep = [in_hand, in_hand[0]]
made = m.immortalize(keep_mortal=keep)
gc.freeze()
out = {"why_not": m.why_not(), "made": made}
out["in_hand"] = [m.is_immortal(o) for o in (keep, in_hand, in_hand[0], in_hand[0]["request"])]
out["immortal"] = [m.is_immortal(o) for o in (data, data[123], reader, reader.__code__,
                                              reader.__code__.co_consts, Thing)]
before = sys.getrefcount(data[5])
keep = [data[5]] * 10
out["refcount_unchanged"] = sys.getrefcount(data[5]) == before
t = Thing()
ref = weakref.ref(t)
del t
out["new_object_freed"] = ref() is None
out["big_sets_kept"] = sum(1 for o in gc.get_objects() if isinstance(o, set) and len(o) > 10_000)
out["again"] = m.immortalize()

def minflt():
    with open("/proc/self/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[7])

r, w = os.pipe()
pid = os.fork()
if pid == 0:
    f0 = minflt()
    reader()
    os.write(w, str(minflt() - f0).encode())
    os._exit(0)
os.close(w)
out["child_faults"] = int(os.read(r, 100))
os.waitpid(pid, 0)
print(json.dumps(out))
"""


def _version(python: str) -> tuple[int, int] | None:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(sys.implementation.name, *sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError:
        return None
    words = done.stdout.split()
    if done.returncode != 0 or len(words) != 3 or words[0] != "cpython":
        return None
    return int(words[1]), int(words[2])


@cache
def newer_python(version: tuple[int, int]) -> str | None:
    """A CPython of ``version``, other than the one running the suite."""
    candidates = [shutil.which(f"python{version[0]}.{version[1]}")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        pattern = f"{version[0]}.{version[1]}.*"
        found = sorted(Path(root, "versions").glob(pattern), reverse=True) if root else []
        candidates += [str(v / "bin" / "python3") for v in found]
    for python in candidates:
        if python and _version(python) == version:
            return python
    return None


def run_script(version: tuple[int, int], *, off: bool = False) -> dict[str, object]:
    python = newer_python(version)
    if python is None:
        pytest.skip(f"no CPython {version[0]}.{version[1]} on this machine (PATH or pyenv)")
    env = {**os.environ, "MOCKFLEET_IMMORTALIZE": "0" if off else "1"}
    done = subprocess.run(
        [python, "-c", SCRIPT, str(MODULE)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("version", immortal.VERSIONS, ids=lambda v: f"{v[0]}.{v[1]}")
def test_objects_made_immortal_are_not_copied_by_a_forked_child(version: tuple[int, int]) -> None:
    on = run_script(version)
    off = run_script(version, off=True)
    assert on["why_not"] is None
    assert isinstance(on["made"], int) and on["made"] > 50_000
    assert on["immortal"] == [True] * 6
    assert on["refcount_unchanged"] is True
    assert on["in_hand"] == [False, False, False, False]
    # Objects made afterwards are ordinary: counted and freed.
    assert on["new_object_freed"] is True
    # Its own bookkeeping (a set of every object's address) was freed, not kept.
    assert on["big_sets_kept"] == 0
    # A second round takes only what was made since (the script's few results).
    assert isinstance(on["again"], int) and on["again"] < 50
    # Reading 50,000 objects copied their ~300 pages without; with, a handful.
    assert isinstance(off["child_faults"], int) and off["child_faults"] >= 250, off
    assert isinstance(on["child_faults"], int) and on["child_faults"] < 60, on
    assert off["made"] == 0 and off["immortal"] == [False] * 6


def test_an_older_interpreter_or_the_switch_turns_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOCKFLEET_IMMORTALIZE", "0")
    assert immortal.why_not() == "turned off by MOCKFLEET_IMMORTALIZE=0"
    assert immortal.immortalize() == 0
    monkeypatch.delenv("MOCKFLEET_IMMORTALIZE")
    if sys.version_info[:2] not in immortal.VERSIONS:
        reason = immortal.why_not()
        assert reason is not None and f"3.{sys.version_info[1]}" in reason
        assert immortal.immortalize() == 0
        assert not immortal.is_immortal(object())
