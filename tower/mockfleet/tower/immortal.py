"""Make the zygote's objects immortal before it forks, where CPython allows it.

A forked mock shares the zygote's memory until it writes to a page, and
CPython writes to an object every time it takes or drops a reference to it:
a mock that runs a function copies the pages holding the function's code,
its constants and the strings it looks up, only to change their reference
counts. Since CPython 3.12 (PEP 683) an object can be *immortal*: its
reference count is never written, and the object is never freed. The
interpreter makes its own static objects immortal; this module does the
same for every object the zygote holds when it freezes the garbage
collector, which is what Instagram's fork-based servers did with their
``gc.immortalize_heap()``.

What it costs: an immortal object is never freed, so whatever the zygote
holds at that moment lives as long as the zygote. It keeps those objects
anyway (the runtime, and each lot's prepared form, which the lot cache
holds for the zygote's life); the rest is the few objects of the request
being served, once per lot seen.

Only for CPython 3.12 and 3.13 with the GIL (their reference count is a
32-bit field at the start of every object, and an immortal one reads
0xFFFFFFFF in it); elsewhere :func:`immortalize` does nothing. Set
``MOCKFLEET_IMMORTALIZE=0`` to turn it off.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from collections.abc import Iterable
from types import CodeType

#: The low 32 bits of an immortal object's reference count (CPython 3.12+,
#: 64-bit): incrementing it is skipped, and as a signed 32-bit value it is
#: negative, which is what the decrement looks at.
IMMORTAL = 0xFFFFFFFF
#: CPython versions whose object header this module knows.
VERSIONS = ((3, 12), (3, 13))
#: Where the 32 bits lie inside ob_refcnt.
_OFFSET = 4 if sys.byteorder == "big" else 0


def why_not() -> str | None:
    """None when :func:`immortalize` will make objects immortal, else why not."""
    if os.environ.get("MOCKFLEET_IMMORTALIZE", "1") == "0":
        return "turned off by MOCKFLEET_IMMORTALIZE=0"
    return _unsupported()


def _unsupported() -> str | None:
    if sys.implementation.name != "cpython":
        return f"not CPython ({sys.implementation.name})"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if sys.version_info[:2] not in VERSIONS:
        return f"CPython {version}: immortal objects need 3.12 or 3.13"
    # the ABI flags rather than sysconfig, which would import threading here
    if "t" in getattr(sys, "abiflags", ""):
        return "a free-threaded build counts references another way"
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        return "not a 64-bit build"
    return None


def is_immortal(obj: object) -> bool:
    """Whether CPython skips ``obj``'s reference-count writes."""
    return _unsupported() is None and _count(id(obj)).value == IMMORTAL


def _count(address: int) -> ctypes.c_uint32:
    return ctypes.c_uint32.from_address(address + _OFFSET)


def immortalize(keep_mortal: Iterable[object] = ()) -> int:
    """Make immortal every object the collector tracks outside its permanent
    generation (that is, everything since the last ``gc.freeze()``), and
    everything they refer to that is not immortal yet. Call it right before
    ``gc.freeze()``. The objects of ``keep_mortal`` stay ordinary, and so
    does what only they refer to: pass the work in hand (a request being
    served), which would otherwise be kept for good. A container in it and
    the tracked containers inside it are all listed by the collector, so
    name each of them. Returns how many objects it changed (0 where
    :func:`why_not` says no)."""
    if why_not() is not None:
        return 0
    # The list first: it leaves itself out, while any container made before it
    # would be made immortal, and so kept for good, with the rest.
    stack: list[object] = gc.get_objects()
    # An object is marked the moment it is reached, so the marks themselves
    # say what was visited: no set of every address, whose memory would stay
    # in the zygote's heap, scattered, and make every fork copy more.
    mortal = {id(keep_mortal), *(id(obj) for obj in keep_mortal)}  # the list itself too
    changed = 0
    while stack:
        obj = stack.pop()
        address = id(obj)
        count = _count(address)
        if count.value == IMMORTAL or address in mortal:
            continue  # the interpreter's own, done already, or to be left alone
        count.value = IMMORTAL
        changed += 1
        stack.extend(gc.get_referents(obj))
        if isinstance(obj, CodeType):
            # A code object does not report what it holds to the collector.
            stack.extend(_code_parts(obj))
    del stack
    return changed


def _code_parts(code: CodeType) -> tuple[object, ...]:
    return (
        code.co_consts,
        code.co_names,
        code.co_filename,
        code.co_name,
        code.co_qualname,
        code.co_linetable,
        code.co_exceptiontable,
    )
