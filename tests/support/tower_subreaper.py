"""A tiny init for tests: ``python tower_subreaper.py CMD...``.

It becomes a child subreaper, runs CMD, and reaps every process re-parented
to it until none is left. A test that kill -9s a tower runs it under this so
the orphaned mocks have a parent that reaps them (instead of the machine's
init), and can tell when they are all gone: this process exits then.
"""

from __future__ import annotations

import os
import signal
import sys

from mockfleet.tower.linux import set_child_subreaper


def main(argv: list[str]) -> int:
    set_child_subreaper()
    pid = os.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
