"""The tower's side of the zygote: spawn it (fork + exec), send start requests,
receive replies with the gate descriptors."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from typing import Any

from mockfleet.tower.linux import set_parent_death_signal
from mockfleet.tower.zygote import ZYGOTE_FD


class ZygoteClient:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.pid = 0
        self.sock: socket.socket | None = None
        self.ready = False

    def spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                # The zygote must never outlive the tower (a new tower starts its own).
                set_parent_death_signal(signal.SIGKILL)
                if os.getppid() != parent:
                    os._exit(1)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                signal.set_wakeup_fd(-1)
                os.dup2(theirs.fileno(), ZYGOTE_FD)  # dup2 makes it inheritable
                os.closerange(ZYGOTE_FD + 1, 65536)
                cmd = [sys.executable, "-m", "mockfleet.tower.zygote", json.dumps(self.cfg)]
                os.execv(sys.executable, cmd)
            finally:
                os._exit(127)
        theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self.pid = pid
        self.ready = False

    def fileno(self) -> int:
        assert self.sock is not None
        return self.sock.fileno()

    def send(self, request: dict[str, Any]) -> bool:
        """False when the socket is full (try again later)."""
        assert self.sock is not None
        try:
            self.sock.send(json.dumps(request).encode())
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return False
        return True

    def receive(self) -> list[tuple[dict[str, Any], int | None]] | None:
        """Replies available now; None when the zygote closed its end."""
        assert self.sock is not None
        out: list[tuple[dict[str, Any], int | None]] = []
        while True:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(
                    self.sock, 65536, 4, socket.MSG_CMSG_CLOEXEC
                )
            except (BlockingIOError, InterruptedError):
                return out
            except OSError:
                return out or None
            if not msg:
                for fd in fds:
                    os.close(fd)
                return out or None
            for extra in fds[1:]:
                os.close(extra)
            out.append((json.loads(msg), fds[0] if fds else None))

    def close(self) -> None:
        """Closing our end makes the zygote exit; the caller reaps it."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.ready = False
