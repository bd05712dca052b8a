"""A keeper for each mock, so that a killed mock's exit is reported at once.

The kernel reports a process's death (SIGCHLD to its parent, a pidfd turning
readable) only after the dying process has torn down its address space, and
on a busy machine that teardown waits for a CPU and on the locks of whatever
walks the shared pages (the VM's page monitor, here). The teardown runs in
whichever process drops the last reference to the address space. So each
mock, once committed, starts a *keeper*: a second process that shares the
mock's address space (``clone(CLONE_VM)``) and does nothing but wait in the
``pause`` system call. When the mock dies, its address space lives on in the
keeper, the kernel reports the mock's exit without tearing anything down,
and the tower, having recorded the exit, kills the mock's process group,
keeper included, which frees the memory off the path that counts. Measured
at 2,000 mocks (docs/performance.md): an exit p99 of 5.9-7.1 ms against
10.8-24.2 ms without.

The keeper runs no Python: its entry point is the C library's ``syscall``
with the number of ``pause``, on a small stack of its own, with every signal
blocked (so no signal handler of the mock's can run in it, on memory it
shares with the mock). Only SIGKILL ends it. It gets a copy of the mock's
descriptor table as it is then, before the device opens anything, so the
mock's own sockets close when the mock dies. It has the mock's user and
limits (it is started after the privilege drop) and its process group.

Who ends a keeper: a mock that ends by itself kills its keeper first; the
tower kills a dead mock's process group before reaping it (while the dead
mock is unreaped its PID, and so its group's ID, cannot be reused); a tower
that finds a mock dead at start-up kills that group too, if the PID is not
someone else's by now. x86-64 Linux only (``pause`` is not a system call on
arm64): elsewhere ``spawn`` returns None and mocks run without keepers.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import signal
import sys

from mockfleet.tower.linux import set_process_name

#: The keeper's name (``ps``, ``top``), next to its mock's ``mf-mock``.
KEEPER_NAME = "mf-keeper"
_CLONE_VM = 0x100
_SYS_PAUSE_X86_64 = 34
_STACK = 64 * 1024
#: The keepers' stacks live in the mock's memory: they must never be freed.
_stacks: list[mmap.mmap] = []


def supported() -> bool:
    # not the platform module: the zygote preloads this one, and every mock with it
    return sys.platform == "linux" and os.uname().machine == "x86_64"


def spawn(own_name: str) -> int | None:
    """Start this process's keeper; its PID, or None where it cannot run.
    The keeper is this process's child and is in its process group; this
    process is named ``own_name`` again afterwards."""
    if not supported():
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    clone = libc.clone
    clone.restype = ctypes.c_int
    clone.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    stack = mmap.mmap(-1, _STACK)
    _stacks.append(stack)
    # x86-64 wants a 16-byte aligned stack; leave a little room above it
    top = (ctypes.addressof(ctypes.c_char.from_buffer(stack)) + _STACK - 64) & ~0xF
    entry = ctypes.cast(libc.syscall, ctypes.c_void_p)
    set_process_name(KEEPER_NAME)  # the name the keeper is born with
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        pid = clone(entry, top, _CLONE_VM | signal.SIGCHLD, ctypes.c_void_p(_SYS_PAUSE_X86_64))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        set_process_name(own_name)
    return pid if pid > 0 else None
