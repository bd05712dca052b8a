"""Start-up split in two: what every device shares, and what each one owns.

The tower forks devices from a preloaded zygote. Everything here is done
once in the zygote (imports, lot parsing and template compilation, TLS
contexts) and then shared copy-on-write by every device; ``gc.freeze()``
after preloading keeps the collector from touching (and so copying) those
pages in the children.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

from mockfleet.mock.device import CompiledLot
from mockfleet.mock.loterror import LotError, ValidatorFailed
from mockfleet.mock.record import FrozenRecord
from mockfleet.mock.validator import LotValidator, validate_in_child

if TYPE_CHECKING:
    from collections.abc import Callable

    from mockfleet.mock.counters import CounterSlot
    from mockfleet.mock.lot import MockLot
    from mockfleet.mock.plain import PlainLot
    from mockfleet.mock.runtime import DeviceRunner
    from mockfleet.mock.sinks.base import Sink


class LoadedLot(FrozenRecord):
    """A validated lot plus everything compiled from it, shared by its devices.

    ``lot`` is the lot's plain mirror (mockfleet.mock.plain), typed as the
    model it mirrors: reading it needs no pydantic."""

    __slots__ = ("compiled", "lot", "path")
    path: str
    lot: MockLot
    compiled: CompiledLot

    def __init__(self, path: str, lot: MockLot, compiled: CompiledLot) -> None:
        self._init(path=path, lot=lot, compiled=compiled)

    @classmethod
    def from_lot(cls, lot: MockLot | PlainLot, path: str = "<lot>") -> LoadedLot:
        compiled = CompiledLot.build(lot)
        return cls(path=path, lot=compiled.lot, compiled=compiled)


_CACHE: dict[tuple[str, int, int], LoadedLot] = {}

#: Validate lots in a child process (see isolate_validation).
_ISOLATED = False


def isolate_validation(on: bool = True) -> None:
    """From now on, validate lot files in a forked child that sends back the
    plain mirror: this process then never imports pydantic, the lot schema or
    YAML. Every fork costs in proportion to what the forking process holds
    (see mockfleet.mock.plain)."""
    global _ISOLATED
    _ISOLATED = on


#: The long-lived validator (see serve_validation), or None.
_VALIDATOR: LotValidator | None = None


def serve_validation() -> None:
    """isolate_validation(), with one long-lived validator child instead of
    a fresh child per lot (see mockfleet.mock.validator). Started now, it
    imports pydantic while this process preloads. The tower's zygote does
    this; a failure to start is tried again at the first lot."""
    global _VALIDATOR
    isolate_validation()
    if _VALIDATOR is None:
        _VALIDATOR = LotValidator()
        with contextlib.suppress(ValidatorFailed):
            _VALIDATOR.start()


def forget_validator() -> None:
    """In a child forked from a process that serves validation (a mock):
    drop the copy of the validator's socket, which is the owner's alone."""
    global _VALIDATOR
    if _VALIDATOR is not None:
        _VALIDATOR.forget()
        _VALIDATOR = None


def stop_validator() -> None:
    """Stop and reap the long-lived validator (the zygote, on its way out)."""
    global _VALIDATOR
    if _VALIDATOR is not None:
        _VALIDATOR.stop()
        _VALIDATOR = None


#: Lots that failed to load, by the same key: (source, problems) of a LotError,
#: or (None, [message]) of a compile error. A fleet of start triggers for one
#: broken lot then costs one validation, not one each.
_FAILED: dict[tuple[str, int, int], tuple[str | None, list[str]]] = {}


def loaded_lot(path: str | os.PathLike[str]) -> LoadedLot:
    """Load (or reuse) a lot; the cache key includes mtime and size so an edited
    file is read again. Raises LotError for an invalid lot, ValueError for a
    template that does not compile (both remembered until the file changes),
    ValidatorFailed when the validator child could not answer (not remembered)."""
    real = os.path.realpath(path)  # as Path.resolve(), without importing pathlib
    st = os.stat(real)
    key = (real, st.st_mtime_ns, st.st_size)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    failed = _FAILED.get(key)
    if failed is not None:
        source, problems = failed
        if source is None:
            raise ValueError(problems[0])
        raise LotError(source, list(problems))
    try:
        if _VALIDATOR is not None:
            mirror: Any = _VALIDATOR.validate(real)
        elif _ISOLATED:
            mirror = validate_in_child(real)
        else:
            from mockfleet.mock.plainlot import load_plain_lot

            mirror = load_plain_lot(real)
        hit = LoadedLot.from_lot(mirror, real)
    except LotError as exc:
        _FAILED[key] = (exc.source, list(exc.problems))
        raise
    except ValueError as exc:  # a template that does not compile (an expression cycle, ...)
        _FAILED[key] = (None, [str(exc)])
        raise
    _CACHE[key] = hit
    return hit


def preload(lot_paths: tuple[str, ...] = ()) -> None:
    """Import the runtime, load the given lots and prepare their sinks, before
    forking."""
    import mockfleet.mock.runtime  # noqa: F401

    warm_up()
    for p in lot_paths:
        prepare_lot(p)


_PREPARED: set[str] = set()


def prepare_lot(path: str | os.PathLike[str]) -> tuple[LoadedLot, bool]:
    """A lot ready for forking devices: loaded, its sink module imported, its
    TLS context built and its send path run once. Returns (lot, fresh): when
    fresh, the caller (a zygote) should ``gc.freeze()`` again so the new
    objects stay out of the children's collections."""
    from mockfleet.mock.sinks.factory import preload_sink

    lot = loaded_lot(path)
    sink = lot.lot.spec.sink
    key = f"{lot.path}:{sink.type}"
    if key in _PREPARED:
        return lot, False
    _PREPARED.add(key)
    preload_sink(sink)
    if sink.type == "http":
        # runs connect/request/response against a loopback listener, so the
        # code pages it specialises are shared instead of copied per device
        from mockfleet.mock.sinks.http import warm_up as warm_http

        warm_http(like=sink)
    # Only a memory optimisation: a device that fails reports its own errors.
    with contextlib.suppress(Exception):
        rehearse(lot)
    return lot, True


def rehearse(lot: LoadedLot, messages: int = 32) -> None:
    """Run a device's per-message work here, on a simulated clock, sending
    nothing: building and encoding messages, publishing counters, logging.

    Python specialises bytecode in place as it runs (3.11's adaptive
    interpreter writes into code objects) and fills lazy caches on first
    use. Done once in the preloading parent, every device forked afterwards
    shares those pages; otherwise each device copies every page it
    specialises during its first messages.
    """
    from mockfleet.mock.counters import SLOT_SIZE, CounterSlot
    from mockfleet.mock.sinks.base import SendOutcome, Sink, Wait

    class Rehearsal(Sink):
        """Accepts every message; nothing leaves the process."""

        def open(self, wait: Wait) -> None:
            pass

        def send(self, body: bytes, wait: Wait) -> SendOutcome:
            return SendOutcome(ok=True)

        def close(self, timeout: float) -> None:
            pass

    slot = CounterSlot(bytearray(SLOT_SIZE), 0)
    _build_devices(lot, slot)
    runner = _rehearsal_runner(lot, 0, slot, lambda _spec, _names: Rehearsal())
    try:
        slot.reset(os.getpid(), runner.real_start)
        runner._publish()
        runner.log("info", "rehearsal", messages=messages)
        engine = runner.engine
        for _ in range(messages * 100):  # bounded: a device may stay silent for long
            if engine.messages >= messages or engine.finished:
                break
            runner._stop_file_seen = float("-inf")  # look each time, as a device does
            runner._select(0)
            runner._send_all(engine.next_due())
            runner._publish()
    finally:
        runner.waker.close()  # restores this process's signal handlers


#: Devices built and dropped by a rehearsal. CPython 3.11 quickens a
#: function's bytecode (rewrites it in place) on its 8th call: code that ran
#: only once here would be rewritten, and so copied, by every device as it
#: starts. Measured: about 20 fewer pages copied per device.
DEVICE_BUILDS = 10


def _build_devices(lot: LoadedLot, slot: CounterSlot) -> None:
    """Build devices as a mock does at its start, with their real sink
    (a sink is closed until opened: building one does no I/O), log their
    start and drop them: the set-up code runs often enough to be quickened."""
    for index in range(DEVICE_BUILDS):
        runner = _rehearsal_runner(lot, index, slot, None)
        try:
            runner.log("info", "started", index=index, pid=os.getpid(), state=runner.engine.state)
        finally:
            runner.waker.close()  # restores this process's signal handlers


def _rehearsal_runner(
    lot: LoadedLot,
    index: int,
    slot: CounterSlot,
    sink_factory: Callable[[Any, dict[str, Any]], Sink] | None,
) -> DeviceRunner:
    """A device runner as a mock builds it, logging into memory, with a stop
    file that never exists; ``sink_factory`` None means the lot's real sink."""
    import io

    from mockfleet.mock.runtime import DeviceRunner, Logger

    return DeviceRunner(
        lot.compiled,
        index,
        stop_file=os.devnull + ".mockfleet-rehearsal",  # never exists
        counters=slot,
        log=Logger(lot.lot.name, lot.lot.device_id(index), io.StringIO()),
        sink_factory=sink_factory,
    )


def warm_up() -> None:
    """Run, once in the parent, the lazy imports and caches a device would
    otherwise fill after the fork, each child paying for its own copy."""
    # (The idna codec that host names need is loaded by preload_sink, and only
    # for a lot that connects to a name rather than an address.)
    import selectors  # noqa: F401
