"""Verification of received messages: the pure core of ``mockfleet receive``.

Every message a mock sends carries an envelope (see ``Envelope`` in the lot
schema): the device's id, its per-device sequence number and the epoch time
of the send. ``Stats.observe`` audits one message body against the envelope;
``Stats.snapshot`` turns the counters into the report.

Counting rules (every figure in the report follows them):

* ``received``: every message body observed, whatever it holds.
* ``malformed``: bodies that are not a JSON object with the three envelope
  fields of the right types (string id, integer seq, numeric sent_at). They
  are charged to their device when the id field is readable.
* ``unique``: distinct sequence numbers; ``duplicates``: repeats of a number;
  ``reordered``: first arrivals of a number lower than the highest already
  seen; ``late``: the subset of those too old for duplicate detection (see
  ``sequence``).
* ``lost``: per device, the numbers between its lowest and highest seen that
  never arrived; it shrinks when a late message fills a gap.
* latency: ``received_at - sent_at`` in milliseconds. Negative values (clocks
  out of step) count in ``clock_skewed`` and are recorded as 0.

Thread safety: one lock guards all state, because the HTTP server (asyncio
thread), the MQTT client (paho's thread) and a reporting thread may all touch
the same ``Stats``. Uncontended, it costs well under a microsecond.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from mockfleet.tower.receiver.latency import LatencyHistogram, bucket_of, summarize_sparse
from mockfleet.tower.receiver.sequence import DEFAULT_WINDOW, SeqTracker

#: Report format identifier; bump when a field changes meaning.
REPORT_SCHEMA = "mockfleet.receive/v1"
#: Seconds of history behind the ``rate`` figure.
RATE_WINDOW = 5


@dataclass(frozen=True, slots=True)
class EnvelopeFields:
    """Names of the envelope fields (configurable in a lot's ``payload.envelope``)."""

    device: str = "device_id"
    seq: str = "seq"
    sent_at: str = "sent_at"
    #: optional: the sample's scheduled time; sent_at minus it is the device's lag
    scheduled_at: str | None = None


class DeviceStats:
    """Counters of one device."""

    __slots__ = (
        "bytes",
        "lat_buckets",
        "lat_count",
        "lat_max",
        "lat_min",
        "malformed",
        "received",
        "seqs",
    )

    def __init__(self, window: int) -> None:
        self.seqs = SeqTracker(window)
        self.received = 0
        self.malformed = 0
        self.bytes = 0
        self.lat_buckets: dict[int, int] = {}
        self.lat_count = 0
        self.lat_max = 0.0
        self.lat_min = math.inf

    def report(self) -> dict[str, Any]:
        """This device's entry under ``per_device`` in the report."""
        seqs = self.seqs
        has_seq = seqs.unique > 0
        return {
            "received": self.received,
            "unique": seqs.unique,
            "lost": seqs.lost,
            "duplicates": seqs.duplicates,
            "reordered": seqs.reordered,
            "late": seqs.late,
            "malformed": self.malformed,
            "first_seq": seqs.min_seq if has_seq else None,
            "last_seq": seqs.max_seq if has_seq else None,
            "bytes": self.bytes,
            "latency_ms": summarize_sparse(
                self.lat_buckets, self.lat_count, self.lat_max, self.lat_min
            ),
        }


class _RateMeter:
    """Messages per second over the last RATE_WINDOW whole seconds, in O(1) memory."""

    __slots__ = ("_counts", "_first", "_seconds")

    _SLOTS = RATE_WINDOW + 2

    def __init__(self) -> None:
        self._seconds = [-1] * self._SLOTS
        self._counts = [0] * self._SLOTS
        self._first: int | None = None

    def add(self, at: float) -> None:
        second = int(at)
        slot = second % self._SLOTS
        if self._seconds[slot] != second:
            self._seconds[slot] = second
            self._counts[slot] = 0
        self._counts[slot] += 1
        if self._first is None:
            self._first = second

    def rate(self, now: float) -> float:
        """Average over the complete seconds before ``now`` (fewer right after start)."""
        if self._first is None:
            return 0.0
        current = int(now)
        span = min(RATE_WINDOW, current - self._first)
        if span <= 0:
            return 0.0
        total = 0
        for second, count in zip(self._seconds, self._counts, strict=True):
            if current - span <= second < current:
                total += count
        return total / span


class Stats:
    """Audits message bodies and keeps fleet-wide and per-device counters.

    ``expected_sent`` may be set (by ``mockfleet run``, which knows what its
    devices sent) to compare the sender's count with what arrived: it adds
    ``sent`` and ``lost_vs_sent`` to the report, which also sees losses at the
    ends of a device's sequence that ``lost`` cannot.
    """

    def __init__(
        self,
        fields: EnvelopeFields | None = None,
        *,
        window: int = DEFAULT_WINDOW,
        clock: Any = time.time,
    ) -> None:
        SeqTracker(window)  # validate the window once, with a clear error
        self.fields = fields or EnvelopeFields()
        self.window = window
        self.expected_sent: int | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._devices: dict[str, DeviceStats] = {}
        self._latency = LatencyHistogram()
        self._lag = LatencyHistogram()
        self._rate = _RateMeter()
        self._malformed_reasons: dict[str, int] = {}
        self.started_at: float = clock()
        self.received = 0
        self.malformed = 0
        self.bytes = 0
        self.clock_skewed = 0
        # Fleet totals kept up to date per message so a snapshot stays O(1)
        # in the number of devices unless per-device detail is asked for.
        self._span = 0
        self._unique = 0
        self._duplicates = 0
        self._reordered = 0
        self._late = 0

    # ------------------------------------------------------------------ input

    def observe(self, body: bytes, received_at: float) -> str | None:
        """Audit one message; return its device id when the envelope has one."""
        fields = self.fields
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            doc = None
        with self._lock:
            self.received += 1
            self.bytes += len(body)
            self._rate.add(received_at)
            if not isinstance(doc, dict):
                self._malformed(None, "not a JSON object" if doc is not None else "not JSON")
                return None
            device_id = doc.get(fields.device)
            if not isinstance(device_id, str) or not device_id:
                self._malformed(None, f"no string {fields.device!r}")
                return None
            device = self._devices.get(device_id)
            if device is None:
                device = self._devices[device_id] = DeviceStats(self.window)
            device.received += 1
            device.bytes += len(body)
            seq = doc.get(fields.seq)
            if type(seq) is not int:  # bool is an int subclass: reject it too
                self._malformed(device, f"no integer {fields.seq!r}")
                return device_id
            sent_at: Any = doc.get(fields.sent_at)
            if type(sent_at) not in (float, int) or not math.isfinite(sent_at):
                self._malformed(device, f"no numeric {fields.sent_at!r}")
                return device_id
            tracker = device.seqs
            before_dup, before_reo, before_late = (
                tracker.duplicates,
                tracker.reordered,
                tracker.late,
            )
            self._span += tracker.observe(seq)
            dup = tracker.duplicates - before_dup
            self._duplicates += dup
            self._unique += 1 - dup
            self._reordered += tracker.reordered - before_reo
            self._late += tracker.late - before_late

            ms = (received_at - sent_at) * 1000.0
            if ms < 0:
                self.clock_skewed += 1
                ms = 0.0
            index = bucket_of(ms)
            self._latency.add(ms, index)
            if fields.scheduled_at is not None:
                due: Any = doc.get(fields.scheduled_at)
                if type(due) in (float, int) and math.isfinite(due):
                    lag = max(0.0, (sent_at - due) * 1000.0)
                    self._lag.add(lag, bucket_of(lag))
            device.lat_buckets[index] = device.lat_buckets.get(index, 0) + 1
            device.lat_count += 1
            if ms > device.lat_max:
                device.lat_max = ms
            if ms < device.lat_min:
                device.lat_min = ms
            return device_id

    def _malformed(self, device: DeviceStats | None, reason: str) -> None:
        self.malformed += 1
        self._malformed_reasons[reason] = self._malformed_reasons.get(reason, 0) + 1
        if device is not None:
            device.malformed += 1

    # ------------------------------------------------------------------ output

    def lost(self) -> int:
        """Fleet-wide loss: the sum of every device's (clamped) loss."""
        with self._lock:
            return self._lost_locked()

    def _lost_locked(self) -> int:
        if self._late:
            # Unchecked late duplicates can push a device below zero: sum the
            # clamped per-device figures instead of trusting the totals.
            return sum(d.seqs.lost for d in self._devices.values())
        return self._span - self._unique

    def snapshot(self, *, per_device: bool = False, now: float | None = None) -> dict[str, Any]:
        """The report: fleet totals, and each device's counters when ``per_device``."""
        now = self._clock() if now is None else now
        with self._lock:
            unique = self._unique
            sent = self.expected_sent
            elapsed = max(0.0, now - self.started_at)
            out: dict[str, Any] = {
                "schema": REPORT_SCHEMA,
                "started_at": self.started_at,
                "at": now,
                "elapsed_s": round(elapsed, 3),
                "devices": len(self._devices),
                "received": self.received,
                "unique": unique,
                "lost": self._lost_locked(),
                "duplicates": self._duplicates,
                "reordered": self._reordered,
                "late": self._late,
                "malformed": self.malformed,
                "malformed_reasons": dict(self._malformed_reasons),
                "bytes": self.bytes,
                "rate": round(self._rate.rate(now), 1),
                "mean_rate": round(self.received / elapsed, 1) if elapsed > 0 else 0.0,
                "latency_ms": self._latency.summary(),
                "schedule_lag_ms": self._lag.summary() if self.fields.scheduled_at else None,
                "clock_skewed": self.clock_skewed,
                "window": self.window,
                "sent": sent,
                "lost_vs_sent": max(0, sent - unique) if sent is not None else None,
            }
            if per_device:
                out["per_device"] = {
                    name: device.report() for name, device in sorted(self._devices.items())
                }
            return out
