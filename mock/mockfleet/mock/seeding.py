"""Deterministic random streams: (lot seed, device index, purpose) -> Random.

Python's ``hash()`` of strings changes per process, so streams are derived
with BLAKE2b: the same lot seed and device index give the same data on any
machine, whatever tower the device lands on and whatever else runs there.
Each purpose (a template field, fault decisions, jitter, ...) gets its own
stream, so adding a field to a template does not change the others' values.
"""

from __future__ import annotations

import random

try:
    # The built-in BLAKE2 that hashlib.blake2b also is. Importing hashlib itself
    # would load OpenSSL's libcrypto (about 0.6 MiB of private memory) into the
    # zygote, and so into the page tables every mock fork copies and every
    # mock exit tears down.
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - an interpreter built without _blake2
    from hashlib import blake2b


def derive(*parts: object) -> int:
    """A 64-bit integer from the parts, stable across processes and machines."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(blake2b(text, digest_size=8).digest(), "big")


def device_seed(lot_seed: int, index: int) -> int:
    return derive("device", lot_seed, index)


def stream(seed: int, purpose: str) -> random.Random:
    """A Random for one purpose of one device."""
    return random.Random(derive(seed, purpose))
