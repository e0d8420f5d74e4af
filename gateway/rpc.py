"""How every call of the typed service runs: decoding, the error model, the deadline.

INTERFACE STUB (issue 16): the service already calls `remaining_s`; the implementation (the handler wrapper
that turns every failure into a documented status, never UNKNOWN) replaces it.
"""

from __future__ import annotations


def remaining_s() -> float | None:
    """Seconds left before the current call's deadline; None outside a call or without a deadline."""
    return None
