"""Numbers in log lines and reports, written one way everywhere."""

from __future__ import annotations

__all__ = ["fmt"]


def fmt(value: object, pattern: str = "{:.3f}", *, missing: str = "n/a") -> str:
    """``pattern`` applied to a float, ``missing`` for None, anything else as ``str`` gives it.

    ``fmt(0.91234)`` is ``0.912``, ``fmt(None)`` is ``n/a``; a report's table cell is
    ``fmt(value, "{:.4g}", missing="")``.
    """
    if value is None:
        return missing
    return pattern.format(value) if isinstance(value, float) else str(value)
