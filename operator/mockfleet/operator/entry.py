"""The ``mockfleet`` console command: one parser, subcommands from each component.

Components register their subcommands through ``register(subparsers)`` in
their own ``cli`` module; this module sits at the top of the dependency chain
(operator -> tower -> mock) so it may import all of them. Each subcommand's
heavy imports happen inside its handler, so ``mockfleet validate`` does not
pay for kopf or boto3.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: cli modules, in the order their subcommands appear in --help
COMPONENT_CLIS = (
    "mockfleet.mock.cli",
    "mockfleet.tower.cli",
    "mockfleet.tower.run_cli",
    "mockfleet.tower.receive_cli",
    "mockfleet.tower.planwatch_cli",
    "mockfleet.operator.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mockfleet",
        description="Fleets of virtual IoT devices for testing IoT backends.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMPONENT_CLIS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a component not written yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
