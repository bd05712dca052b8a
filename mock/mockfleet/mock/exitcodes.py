"""Exit codes of ``mockfleet mock``: the tower's restart policy reads them.

| code | meaning                                                   | restart? |
|------|-----------------------------------------------------------|----------|
| 0    | finished: duration, message count, terminal state, stop   | Always   |
| 1    | unexpected internal error (a bug: please report it)        | OnFailure|
| 2    | usage error (bad command line)                            | no       |
| 3    | invalid lot (schema, template, unreadable file)           | no       |
| 4    | fatal sink error (credentials rejected, bad TLS files)    | no       |
| 5    | the sink stayed unreachable past the failure budget       | OnFailure|
| 128+N| killed by signal N (the tower records the signal)         | OnFailure|
"""

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INVALID_LOT = 3
EXIT_SINK_FATAL = 4
EXIT_SINK_UNREACHABLE = 5

#: Exits that a restart cannot fix: restarting would only fail again.
PERMANENT_FAILURES = frozenset({EXIT_USAGE, EXIT_INVALID_LOT, EXIT_SINK_FATAL})

DESCRIPTIONS = {
    EXIT_OK: "finished",
    EXIT_INTERNAL: "internal error",
    EXIT_USAGE: "usage error",
    EXIT_INVALID_LOT: "invalid lot",
    EXIT_SINK_FATAL: "fatal sink error",
    EXIT_SINK_UNREACHABLE: "sink unreachable",
}
