"""The error of a lot that cannot be used, apart from the schema that finds it,
so that processes which never load pydantic (the tower's zygote) can raise
and catch it. ``mockfleet.mock.lot`` re-exports it."""

from __future__ import annotations


class LotError(Exception):
    """A lot that cannot be used; ``problems`` are 'field.path: message' lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid lot:\n  " + "\n  ".join(problems))


class ValidatorFailed(RuntimeError):
    """The child that validates a lot could not run or gave no answer (a
    failed fork, a child killed by the OOM killer): nothing is known about
    the lot, so a start that needs it should be tried again, not refused."""
