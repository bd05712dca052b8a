"""Subcommands of the device component: validate, preview, mock."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from mockfleet.mock.exitcodes import EXIT_INVALID_LOT, EXIT_OK, EXIT_USAGE

#: Preview's simulated clock starts here unless --real-clock is given, so the
#: same lot previews to the same bytes on any day.
PREVIEW_EPOCH = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def _load(path: str) -> Any:
    """Load a lot or print its problems; returns None on failure."""
    from mockfleet.mock.lot import LotError
    from mockfleet.mock.preload import loaded_lot

    try:
        return loaded_lot(path)
    except LotError as exc:
        print(f"error: {exc.source}: invalid lot", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return None
    except FileNotFoundError:
        print(f"error: {path}: no such file", file=sys.stderr)
        return None
    except ValueError as exc:  # e.g. an expression cycle found while compiling
        print(f"error: {path}: invalid lot\n  - {exc}", file=sys.stderr)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        loaded = _load(path)
        if loaded is None:
            failed += 1
            continue
        spec = loaded.lot.spec
        states = ", ".join(spec.states) or "none"
        print(
            f"ok: {path}: lot {loaded.lot.name!r}, {spec.devices} devices, "
            f"sink {spec.sink.type}, states: {states}"
        )
    return EXIT_INVALID_LOT if failed else EXIT_OK


def cmd_preview(args: argparse.Namespace) -> int:
    from mockfleet.mock.device import preview

    loaded = _load(args.file)
    if loaded is None:
        return EXIT_INVALID_LOT
    lot = loaded.lot
    if not 0 <= args.device < max(lot.spec.devices, 1):
        print(
            f"error: --device {args.device} is outside this lot's devices "
            f"0..{max(lot.spec.devices - 1, 0)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    import time

    start = time.time() if args.real_clock else PREVIEW_EPOCH
    out = sys.stdout
    for at, body, state in preview(loaded.compiled, args.device, args.count, start):
        if args.raw:
            out.write(body.decode("utf-8", "replace") + "\n")
            continue
        stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
        try:
            shown = json.dumps(json.loads(body), ensure_ascii=False)
        except ValueError:
            shown = body.decode("utf-8", "replace")  # text formats and malformed faults
        out.write(f"{stamp} [{state}] {shown}\n")
    return EXIT_OK


def cmd_mock(args: argparse.Namespace) -> int:
    from mockfleet.mock.counters import CounterFile
    from mockfleet.mock.runtime import run_device

    loaded = _load(args.lot)
    if loaded is None:
        return EXIT_INVALID_LOT
    if args.index < 0 or args.index >= loaded.lot.spec.devices:
        print(
            f"error: --index {args.index} is outside this lot's devices "
            f"0..{loaded.lot.spec.devices - 1}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    slot = None
    if args.counters:
        slot = CounterFile(args.counters, args.slot + 1, create=True).slot(args.slot)
    return run_device(loaded, args.index, stop_file=args.stop_file, counters=slot)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate", help="check lot files; errors name the field and the problem")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("preview", help="print a device's first payloads; nothing is sent")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--device", type=int, default=0, help="device index (default 0)")
    p.add_argument("--count", type=int, default=10, help="how many messages (default 10)")
    p.add_argument(
        "--real-clock",
        action="store_true",
        help="start the simulated clock now instead of at 2026-01-01T00:00:00Z",
    )
    p.add_argument("--raw", action="store_true", help="print message bodies only")
    p.set_defaults(handler=cmd_preview)

    p = sub.add_parser("mock", help="run one device in this process until it ends or is stopped")
    p.add_argument("--lot", required=True, metavar="FILE")
    p.add_argument("--index", type=int, required=True, metavar="N")
    p.add_argument("--stop-file", metavar="PATH", help="stop (and delete it) when it appears")
    p.add_argument("--counters", metavar="PATH", help="counter file to write live counters to")
    p.add_argument("--slot", type=int, default=0, help="slot in the counter file")
    p.set_defaults(handler=cmd_mock)
