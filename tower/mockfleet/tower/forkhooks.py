"""Lighter after-fork work in the children of the single-threaded zygote.

Every ``os.fork`` runs ``threading``'s after-fork hook in the child. The hook
rebuilds the module's thread table and resets the locks of every thread
object. In a child of a process where the forking thread was the only
thread, there is nothing to reset. Running the hook anyway costs each mock
about 130 page copies (copy-on-write) before its first line of Python; over
a whole start, where the device later touches some of those pages itself,
the tower bench measured 781-788 -> 737 page faults and 2.70-2.74 -> 2.55
MiB PSS per mock (CPython 3.11; ``pydantic`` imports ``threading``, so the
zygote cannot do without the module).

:func:`skip_threading_after_fork_when_alone` keeps the hook registered, but
changes the hook function's body so that it returns at once when the forking
thread was the only running thread ``threading`` knew of (the one entry of
its table, none starting). Otherwise it runs the original body, so a child
of a process with threads is cleaned up as before (a device that forks with
threads running, for one). A thread that has already ended needs nothing
from the hook: its lock was released when it ended. It is installed only on
the CPython versions whose hook was read for this: a new version's hook may
do work that even a lone thread needs.
"""

from __future__ import annotations

import sys
import types
from typing import Any

#: CPython versions whose threading._after_fork was checked (3.12's is 3.11's,
#: line for line): for a lone thread it only rebuilds the same one-entry table
#: and re-creates the same locks
VERIFIED = ((3, 11), (3, 12))

#: The replacement body. It is compiled here but runs with threading's module
#: globals (the hook function keeps its own __globals__), so these names are
#: threading's own.
_GUARD_SOURCE = """
def _after_fork():
    if not _limbo and len(_active) == 1 and get_ident() in _active:
        return  # the forking thread was the only one: nothing to reset
    _mockfleet_full_after_fork()
"""


def skip_threading_after_fork_when_alone() -> bool:
    """Install the guard into ``threading._after_fork``; True when it is in
    place (also when it already was), False where it does not apply.

    Where nothing has imported ``threading`` yet there is no hook to guard,
    and this does not import it (that would only add the module and its hook
    to every mock): call it again after loading code that may import it."""
    threading = sys.modules.get("threading")
    if threading is None:
        return False
    if sys.implementation.name != "cpython" or sys.version_info[:2] not in VERIFIED:
        return False
    hook = getattr(threading, "_after_fork", None)
    if not isinstance(hook, types.FunctionType) or hook.__closure__:
        return False
    module: Any = threading
    if isinstance(getattr(module, "_mockfleet_full_after_fork", None), types.FunctionType):
        return True
    names = ("_limbo", "_active", "get_ident")
    if not all(hasattr(module, name) for name in names):
        return False
    namespace: dict[str, Any] = {}
    exec(compile(_GUARD_SOURCE, "<mockfleet.tower.forkhooks>", "exec"), namespace)
    # The original body, as a function of its own, for the case with threads.
    module._mockfleet_full_after_fork = types.FunctionType(
        hook.__code__, hook.__globals__, hook.__name__, hook.__defaults__
    )
    # The registered hook is this very function object: change its body, not
    # the module attribute (os.register_at_fork holds the object).
    hook.__code__ = namespace["_after_fork"].__code__
    return True
