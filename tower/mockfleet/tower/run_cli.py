"""The ``run`` subcommand: a whole lot on this machine."""

from __future__ import annotations

import argparse
from typing import Any

from mockfleet.mock.durations import parse_duration


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fraction(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        msg = f"expected a fraction such as 0.01 or 1%, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 1 (0% and 100%)")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    from mockfleet.tower.localrun import LocalRun, RunOptions
    from mockfleet.tower.runplan import Thresholds

    opts = RunOptions(
        lot_path=args.lot,
        devices=args.devices,
        duration=args.duration,
        ramp=args.ramp,
        report=args.report,
        receiver=args.receiver,
        checks=Thresholds(
            max_loss=args.max_loss,
            max_errors=args.max_errors,
            allow_failed_devices=args.allow_failed_devices,
        ),
        workdir=args.workdir,
        keep=args.keep,
        plain=True if args.plain else None,
        tower_args=(["--max-start-rate", str(args.max_start_rate)] if args.max_start_rate else []),
    )
    return LocalRun(opts).run()


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run a whole lot on this machine with live progress and a verifying receiver",
        description="Runs a private tower, starts the lot's devices at the ramp rate, shows "
        "live progress, stops everything on Ctrl-C, and prints (and optionally writes) a report. "
        "Exit code: 0 checks passed, 1 checks failed, 3 invalid lot, 130 interrupted.",
    )
    p.add_argument("lot", metavar="LOT.yaml")
    p.add_argument("--devices", type=_count, help="override spec.devices")
    p.add_argument("--duration", type=_duration, help="override spec.timing.duration (e.g. 2m)")
    p.add_argument("--ramp", type=_positive, metavar="RATE", help="device starts per second")
    p.add_argument("--report", metavar="PATH", help="write the JSON report here")
    p.add_argument(
        "--receiver",
        choices=["auto", "on", "off"],
        default="auto",
        help="embedded verifying receiver: auto = when the lot's http sink points at loopback",
    )
    p.add_argument("--max-loss", type=_fraction, help="fail when lost/sent exceeds this")
    p.add_argument("--max-errors", type=_count, help="fail when send errors exceed this")
    p.add_argument(
        "--allow-failed-devices", action="store_true", help="do not fail on crashed devices"
    )
    p.add_argument("--max-start-rate", type=_positive, help="the tower's start pacing (per s)")
    p.add_argument("--workdir", help="keep the run's files (lot, tower state, logs) here")
    p.add_argument("--keep", action="store_true", help="do not delete the temporary workdir")
    p.add_argument("--plain", action="store_true", help="line-based progress even on a terminal")
    p.set_defaults(handler=cmd_run)
