"""Live per-device counters in a shared, file-backed array of fixed slots.

A supervisor with thousands of devices must read all their counters cheaply
and without talking to each process. So every device owns one 128-byte slot
of a memory-mapped file: the device writes its counters with plain stores
(no system call per message), and the tower reads the whole array at once.
The file survives a tower re-exec: running devices keep writing into their
mapping and the new tower maps the same file again.

A device maps only the page that holds its slot (``map_slot``), never the
whole file. Every process mapping a page of a shared file is visited, under
the file's mapping lock, whenever the kernel walks that page's mappings
(writeback cleaning a dirty page, memory-reclaim scans); and an exiting
process needs that same lock to leave. With the whole file in thousands of
devices, each such walk visited all of them and exits queued behind it for
up to seconds; with one page each, a walk visits the few devices sharing it.

Torn reads are prevented with a sequence lock: the writer makes the slot's
first word odd while it writes and even when done; a reader retries while
the word is odd or changed under it.

Slot layout (little-endian)::

    0   u32  seqlock            4   u32  pid
    8   u64  sent               16  u64  failed
    24  u64  retried            32  u64  bytes
    40  u64  dropped (faults)   48  f64  last send (epoch s)
    56  f64  started (epoch s)  64  32s  state (u8 length + utf-8)
    96  32s  last error (u8 length + utf-8)
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import NamedTuple

SLOT_SIZE = 128
_HEAD = struct.Struct("<II")
_NUMS = struct.Struct("<QQQQQdd")  # sent failed retried bytes dropped last_send started
_NUMS_AT = 8
_STATE_AT = 64
_ERROR_AT = 96
_TEXT = 32


class Counters(NamedTuple):
    """One slot's numbers as read (a named tuple: no dataclasses import in
    the modules a device runs, see mockfleet.mock.record)."""

    pid: int
    sent: int
    failed: int
    retried: int
    bytes: int
    dropped: int
    last_send: float
    started: float
    state: str
    last_error: str


def _text(value: str) -> bytes:
    raw = value.encode("utf-8", "replace")[: _TEXT - 1]
    return bytes([len(raw)]) + raw.ljust(_TEXT - 1, b"\0")


class CounterSlot:
    """The writer side: one device's slot. Only that device writes it."""

    __slots__ = (
        "_buf",
        "_error",
        "_off",
        "_seq",
        "_state",
        "bytes",
        "dropped",
        "failed",
        "last_send",
        "retried",
        "sent",
        "started",
    )

    def __init__(self, buf: mmap.mmap | bytearray, offset: int) -> None:
        self._buf = buf
        self._off = offset
        self._seq = 0
        self.sent = self.failed = self.retried = self.bytes = self.dropped = 0
        self.last_send = self.started = 0.0
        self._state = ""
        self._error = ""

    def reset(self, pid: int, started: float) -> None:
        self.sent = self.failed = self.retried = self.bytes = self.dropped = 0
        self.last_send = 0.0
        self.started = started
        self._state = ""
        self._error = ""
        self._seq = (_HEAD.unpack_from(self._buf, self._off)[0] + 1) | 1
        _HEAD.pack_into(self._buf, self._off, self._seq, pid)
        self._write_body(text=True)
        self._seq += 1
        _HEAD.pack_into(self._buf, self._off, self._seq, pid)

    def _write_body(self, text: bool) -> None:
        _NUMS.pack_into(
            self._buf,
            self._off + _NUMS_AT,
            self.sent,
            self.failed,
            self.retried,
            self.bytes,
            self.dropped,
            self.last_send,
            self.started,
        )
        if text:
            self._buf[self._off + _STATE_AT : self._off + _STATE_AT + _TEXT] = _text(self._state)
            self._buf[self._off + _ERROR_AT : self._off + _ERROR_AT + _TEXT] = _text(self._error)

    def publish(self, state: str | None = None, error: str | None = None) -> None:
        """Make the current numbers (and optionally state/error) visible."""
        text = False
        if state is not None and state != self._state:
            self._state = state
            text = True
        if error is not None and error != self._error:
            self._error = error
            text = True
        buf, off = self._buf, self._off
        self._seq += 1
        struct.pack_into("<I", buf, off, self._seq)
        self._write_body(text)
        self._seq += 1
        struct.pack_into("<I", buf, off, self._seq)


def map_slot(fd: int, index: int, size: int | None = None) -> CounterSlot:
    """Slot ``index`` of the counter file open at ``fd``, mapping just its page.
    ``size`` is the file's size where the caller knows it (it is then not
    looked up: a forked mock saves the call and the objects it touches)."""
    if index < 0:
        raise IndexError(f"counter slot {index} is negative")
    off = index * SLOT_SIZE
    base = off - off % mmap.ALLOCATIONGRANULARITY
    if size is None:
        size = os.fstat(fd).st_size
    if size < off + SLOT_SIZE:
        raise IndexError(f"counter slot {index} lies beyond the end of the counter file")
    length = min(mmap.PAGESIZE, size - base)  # the last page may be partial
    buf = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=base)
    return CounterSlot(buf, off - base)


class CounterFile:
    """A file of ``slots`` counter slots, mapped shared."""

    def __init__(self, path: str | os.PathLike[str], slots: int, create: bool = False) -> None:
        self.path = os.fspath(path)
        self.slots = slots
        size = slots * SLOT_SIZE
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)

    @classmethod
    def open_existing(cls, path: str | os.PathLike[str]) -> CounterFile:
        return cls(path, os.stat(path).st_size // SLOT_SIZE)

    def slot(self, index: int) -> CounterSlot:
        if not 0 <= index < self.slots:
            raise IndexError(f"counter slot {index} outside 0..{self.slots - 1}")
        return CounterSlot(self._map, index * SLOT_SIZE)

    def read(self, index: int, attempts: int = 100) -> Counters:
        off = index * SLOT_SIZE
        buf = self._map
        for _ in range(attempts):
            seq, pid = _HEAD.unpack_from(buf, off)
            if seq & 1:
                continue
            nums = _NUMS.unpack_from(buf, off + _NUMS_AT)
            state = bytes(buf[off + _STATE_AT : off + _STATE_AT + _TEXT])
            error = bytes(buf[off + _ERROR_AT : off + _ERROR_AT + _TEXT])
            if _HEAD.unpack_from(buf, off)[0] == seq:
                return Counters(pid, *nums, _decode(state), _decode(error))  # type: ignore[call-arg]
        raise RuntimeError(f"counter slot {index} kept changing while being read")

    def clear(self, index: int) -> None:
        off = index * SLOT_SIZE
        seq = _HEAD.unpack_from(self._map, off)[0]
        self._map[off + 4 : off + SLOT_SIZE] = bytes(SLOT_SIZE - 4)
        _HEAD.pack_into(self._map, off, (seq + 2) & ~1 & 0xFFFFFFFF, 0)

    def close(self) -> None:
        self._map.close()


def _decode(raw: bytes) -> str:
    return raw[1 : 1 + raw[0]].decode("utf-8", "replace")
