"""The C layer under the ``signal`` module, for processes forked by the thousand.

Its functions take and return plain ints. The ``signal`` module's wrappers
convert every value to and from an enum: objects that a freshly forked
device, which touches them once, would copy (copy-on-write) for nothing.
Light on purpose: the tower imports it too, without the device runtime.
"""

from __future__ import annotations

import importlib
from typing import Any

raw_signal: Any = importlib.import_module("_signal")
