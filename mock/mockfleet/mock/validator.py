"""Lot validation away from the zygote: in a child per lot, or in one
long-lived child that has pydantic loaded.

The tower's zygote never imports pydantic (see mockfleet.mock.plain): every
mock would inherit it. So a lot file is read, validated and mirrored in a
child process, which sends the plain mirror back. A fresh child per lot
pays the import of pydantic and the lot schema each time, about 0.4 s
before a new lot's first mock can start, and a zygote seeing many lots pays
it once per lot, one after another. :class:`LotValidator` is a child forked
when the zygote starts: it imports while the zygote preloads, then answers
each lot in milliseconds.

Either way the answer is ``("ok", mirror)``, ``("invalid", source,
problems)`` or ``("failed", reason)``, sent as marshal, or as pickle for a
value marshal cannot carry (see ``plain.dumps``).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import struct
import time
from typing import TYPE_CHECKING, Any, cast

from mockfleet.mock.loterror import LotError, ValidatorFailed

if TYPE_CHECKING:
    from mockfleet.mock.plain import PlainLot

_LEN = struct.Struct("<I")
#: How often an idle validator looks whether the process it serves is gone.
PARENT_CHECK = 5.0
#: How long stop() waits for the validator to exit before killing it.
STOP_TIMEOUT = 5.0
#: A lot whose validation takes longer is refused (a YAML bomb, say): the
#: zygote waits for the answer, and every start waits with it.
VALIDATE_TIMEOUT = 60.0


# --------------------------------------------------------------------------- the answer


def result_for(path: str) -> tuple[Any, ...]:
    """Validate ``path`` here (pydantic loaded): the answer to send back."""
    try:
        from mockfleet.mock.plainlot import load_plain_lot

        return ("ok", load_plain_lot(path))
    except LotError as exc:
        return ("invalid", exc.source, exc.problems)
    except Exception as exc:
        return ("failed", f"{type(exc).__name__}: {exc}")


def encode(result: tuple[Any, ...]) -> bytes:
    """marshal (b"M") when the answer holds only what a mirror is made of,
    else pickle (b"P"); a value neither can carry becomes a "failed" answer,
    so the lot is refused with the reason rather than retried."""
    from mockfleet.mock import plain

    try:
        try:
            return b"M" + plain.dumps(result)
        except TypeError:
            import pickle

            return b"P" + pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        return b"M" + plain.dumps(("failed", f"{type(exc).__name__}: {exc}"))


def answer(path: str, data: bytes) -> PlainLot:
    """The mirror from an encoded answer, or the LotError it reports."""
    from mockfleet.mock import plain

    if data[:1] == b"M":
        result = plain.loads(data[1:])
    else:
        import pickle  # only for a lot that needs it: see plain.dumps

        result = pickle.loads(data[1:])
    if result[0] == "invalid":
        raise LotError(result[1], result[2])
    if result[0] == "failed":
        raise LotError(path, [f"validating the lot failed: {result[1]}"])
    return cast("PlainLot", result[1])


# --------------------------------------------------------------------------- one child per lot


def validate_in_child(path: str) -> PlainLot:
    """Read, validate and mirror a lot file in a forked child, which alone
    imports pydantic and the schema. A LotError there is raised here with the
    same problems; ValidatorFailed when the child could not be started or
    died without an answer (worth trying again)."""
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(r)
        os.close(w)
        raise ValidatorFailed(f"cannot start the lot validator: {exc.strerror or exc}") from None
    if pid == 0:  # pragma: no cover - runs in the child (its result is tested)
        code = 0
        try:
            os.close(r)
            data = encode(result_for(path))
            while data:
                data = data[os.write(w, data) :]
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    try:
        while chunk := os.read(r, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    if not chunks:
        raise ValidatorFailed(f"the lot validator died without an answer (wait status {status})")
    return answer(path, b"".join(chunks))


# --------------------------------------------------------------------------- one child for all


class LotValidator:
    """A long-lived validator child, started by :meth:`start` (or by the first
    :meth:`validate`). If it dies, the request that finds it dead raises
    ValidatorFailed and the next one starts a new child."""

    def __init__(self) -> None:
        self.pid = 0
        self.sock: socket.socket | None = None

    def start(self) -> None:
        """Fork the validator; it imports pydantic and the schema at once."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = os.fork()
        except OSError as exc:
            ours.close()
            theirs.close()
            raise ValidatorFailed(
                f"cannot start the lot validator: {exc.strerror or exc}"
            ) from None
        if pid == 0:  # pragma: no cover - runs in the child (its answers are tested)
            code = 0
            try:
                ours.close()
                _serve(theirs)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        self.pid, self.sock = pid, ours

    def validate(self, path: str, timeout: float = VALIDATE_TIMEOUT) -> PlainLot:
        """Like validate_in_child, from the long-lived child. A lot that takes
        longer than ``timeout`` is refused (LotError, remembered like any
        invalid lot) and the validator replaced."""
        if self.sock is None:
            self.start()
        assert self.sock is not None
        self.sock.settimeout(timeout)
        try:
            _send(self.sock, os.fsencode(path))
            data = _recv(self.sock)
        except TimeoutError:
            self.stop()
            raise LotError(
                path, [f"validating the lot took longer than {timeout:g} s; is it that large?"]
            ) from None
        except OSError:
            data = None
        if data is None:
            status = self.stop()
            raise ValidatorFailed(
                f"the lot validator died without an answer (wait status {status})"
            )
        return answer(path, data)

    def forget(self) -> None:
        """In a forked child of the owner (a mock): close this process's copy
        of the socket, so that the validator sees end-of-file once its owner
        is gone, and never wait for it."""
        if self.sock is not None:
            self.sock.close()
        self.sock, self.pid = None, 0

    def stop(self) -> int | None:
        """Close the socket (the validator exits on end-of-file) and reap it;
        returns its wait status (None when there was none to reap)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        pid, self.pid = self.pid, 0
        if not pid:
            return None
        deadline = time.monotonic() + STOP_TIMEOUT
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if done:
                return status
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                return os.waitpid(pid, 0)[1]
            time.sleep(0.005)  # a brief, bounded wait for a process that is exiting


def _serve(sock: socket.socket) -> None:  # pragma: no cover - runs in the child
    """The validator's loop: one lot path in, one answer out, until the
    socket closes or the process that started it is gone."""
    keep = sock.fileno()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd != keep:
            with contextlib.suppress(OSError):
                os.close(fd)  # the zygote's socket to the tower, among others
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    sock.settimeout(None)
    parent = os.getppid()
    from mockfleet.mock.plainlot import load_plain_lot  # noqa: F401 - the import is the point

    while True:
        readable, _, _ = select.select([sock], [], [], PARENT_CHECK)
        if not readable:
            if os.getppid() != parent:
                return  # its owner died and someone kept the socket open
            continue
        request = _recv(sock)
        if request is None:
            return
        _send(sock, encode(result_for(os.fsdecode(request))))


def _send(sock: socket.socket, data: bytes) -> None:
    sock.sendall(_LEN.pack(len(data)) + data)


def _recv(sock: socket.socket) -> bytes | None:
    """One length-prefixed frame; None at end-of-file."""
    head = _exactly(sock, _LEN.size)
    if head is None:
        return None
    return _exactly(sock, _LEN.unpack(head)[0])


def _exactly(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)
