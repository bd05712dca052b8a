"""One device's sequence numbers: duplicates, reordering and loss in bounded memory.

A device numbers the messages it *generates* (``seq``), so a gap in what
arrives is a loss, a number seen twice is a duplicate, and a number lower
than the highest seen so far is a reordering. Remembering every number ever
seen would grow without bound, so a device keeps a sliding bitmap of the last
``window`` numbers below its highest one (a ring indexed by ``seq % window``).

Numbers that fall *behind* the window (``seq <= highest - window``) can no
longer be checked for duplication: they count as ``late`` (and as reordered)
and are assumed to be first arrivals. A duplicate of such a number is then
counted as a unique arrival, which is why ``lost`` is clamped at zero and why
``late`` is reported: a non-zero ``late`` says the duplicate figure is a lower
bound. With the default window of 4096 that takes a message delayed by more
than 4096 later messages of the same device.

The first number seen is taken as the start (devices may count from 0 or 1);
a number lower than it later extends the span down. Losses before the first
arrival or after the last are invisible here: compare with the sender's count
(``Stats.expected_sent``) to see them.
"""

from __future__ import annotations

#: Default size of the duplicate-detection window, in sequence numbers.
DEFAULT_WINDOW = 4096


class SeqTracker:
    """Verification state of one device's sequence numbers."""

    __slots__ = (
        "_bits",
        "_mask",
        "duplicates",
        "late",
        "max_seq",
        "min_seq",
        "reordered",
        "unique",
        "window",
    )

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window < 8 or window & (window - 1):
            raise ValueError(f"window must be a power of two >= 8, got {window}")
        self.window = window
        self._mask = window - 1
        # Allocated on the first number: devices that only ever send malformed
        # messages cost nothing.
        self._bits: bytearray | None = None
        self.min_seq = 0
        self.max_seq = 0
        self.unique = 0
        self.duplicates = 0
        self.reordered = 0
        self.late = 0

    @property
    def span(self) -> int:
        """How many numbers lie between the lowest and highest seen, inclusive."""
        return self.max_seq - self.min_seq + 1 if self._bits is not None else 0

    @property
    def lost(self) -> int:
        """Numbers inside the span that never arrived (never negative, see module doc)."""
        return max(0, self.span - self.unique)

    def observe(self, seq: int) -> int:
        """Record one arrival; return how much the span grew (for fleet totals)."""
        bits = self._bits
        if bits is None:
            bits = self._bits = bytearray(self.window >> 3)
            self.min_seq = self.max_seq = seq
            pos = seq & self._mask
            bits[pos >> 3] |= 1 << (pos & 7)
            self.unique = 1
            return 1
        top = self.max_seq
        mask = self._mask
        if seq > top:
            advance = seq - top
            if advance >= self.window:
                # Everything in the ring is now behind the window.
                bits[:] = bytes(len(bits))
            else:
                # Slots of the numbers skipped over still hold bits of numbers
                # that just left the window: clear them.
                for skipped in range(top + 1, seq):
                    pos = skipped & mask
                    bits[pos >> 3] &= ~(1 << (pos & 7)) & 0xFF
            pos = seq & mask
            bits[pos >> 3] |= 1 << (pos & 7)
            self.max_seq = seq
            self.unique += 1
            return advance
        grown = 0
        if seq > top - self.window:
            pos = seq & mask
            bit = 1 << (pos & 7)
            if bits[pos >> 3] & bit:
                self.duplicates += 1
                return 0
            bits[pos >> 3] |= bit
        else:
            self.late += 1
        self.unique += 1
        self.reordered += 1
        if seq < self.min_seq:
            grown = self.min_seq - seq
            self.min_seq = seq
        return grown
