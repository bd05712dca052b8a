"""Deterministic random streams: (lot seed, device index, purpose) -> Random.

Python's ``hash()`` of strings changes per process, so streams are derived
with BLAKE2b: the same lot seed and device index give the same data on any
machine, whatever tower the device lands on and whatever else runs there.
Each purpose (a template field, fault decisions, jitter, ...) gets its own
stream, so adding a field to a template does not change the others' values.
"""

from __future__ import annotations

import hashlib
import random


def derive(*parts: object) -> int:
    """A 64-bit integer from the parts, stable across processes and machines."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def device_seed(lot_seed: int, index: int) -> int:
    return derive("device", lot_seed, index)


def stream(seed: int, purpose: str) -> random.Random:
    """A Random for one purpose of one device."""
    return random.Random(derive(seed, purpose))
