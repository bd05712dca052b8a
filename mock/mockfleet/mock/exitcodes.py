"""Exit codes of ``mockfleet mock``: the tower's restart policy reads them.

| code  | meaning                                                     | restart (OnFailure) |
|-------|-------------------------------------------------------------|---------------------|
| 0     | finished (duration, message count, terminal state) or stopped | no                |
| 1     | unexpected internal error (a bug: please report it)         | yes                 |
| 2     | usage error (bad command line)                              | never               |
| 3     | invalid lot (schema, template, unreadable file)             | never               |
| 4     | fatal sink error (credentials rejected, bad secret/TLS files) | never             |
| signal| killed by a signal (the tower records which)                | yes                 |

An unreachable backend is not an exit: the device keeps retrying with
backoff and counts the failures, because backends under test come and go.
"""

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INVALID_LOT = 3
EXIT_SINK_FATAL = 4

#: Exits that a restart cannot fix: restarting would only fail again.
PERMANENT_FAILURES = frozenset({EXIT_USAGE, EXIT_INVALID_LOT, EXIT_SINK_FATAL})

DESCRIPTIONS = {
    EXIT_OK: "finished",
    EXIT_INTERNAL: "internal error",
    EXIT_USAGE: "usage error",
    EXIT_INVALID_LOT: "invalid lot",
    EXIT_SINK_FATAL: "fatal sink error",
}
