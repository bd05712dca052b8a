"""Secrets for sinks, read from an environment variable or a mounted file.

Lot files never hold secrets inline (the schema rejects them); they name where
to find them. Messages here name the variable or file, never the value.
"""

from __future__ import annotations

import os

from mockfleet.mock.sinks.base import FatalSinkError


def read_secret(what: str, env: str | None = None, file: str | None = None) -> str | None:
    """The secret ``what`` from ``env`` (a variable name) or ``file`` (a path).

    The variable wins when both are given. A file's trailing newline is
    stripped (``echo secret > file`` writes one). Returns None when neither is
    given; raises FatalSinkError when the named source is missing or unreadable.
    """
    if env:
        value = os.environ.get(env)
        if value is None:
            raise FatalSinkError(
                f"{what}: environment variable {env} is not set; "
                "set it in the device's environment or use a file instead"
            )
        return value
    if file:
        try:
            with open(file, encoding="utf-8") as fh:
                return fh.read().rstrip("\r\n")
        except OSError as exc:
            raise FatalSinkError(
                f"{what}: cannot read secret file {file}: {exc.strerror or exc}; "
                "check that the secret is mounted there and readable"
            ) from None
        except UnicodeDecodeError:
            raise FatalSinkError(f"{what}: secret file {file} is not UTF-8 text") from None
    return None


def username(literal: str | None, env: str | None, what: str) -> str | None:
    """A user name given literally or through an environment variable."""
    if literal is not None:
        return literal
    return read_secret(what, env=env)
