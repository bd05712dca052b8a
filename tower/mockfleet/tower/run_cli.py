"""The ``run`` subcommand: a whole lot on this machine."""

from __future__ import annotations

import argparse
from typing import Any

from mockfleet.tower.argtypes import count as _count
from mockfleet.tower.argtypes import duration as _duration
from mockfleet.tower.argtypes import fraction as _fraction
from mockfleet.tower.argtypes import positive as _positive


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
