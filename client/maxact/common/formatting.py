"""How numbers and shapes read on HTML pages: shared by the report gallery and the server's
web UI, so a figure looks the same in both."""

from __future__ import annotations

from collections.abc import Sequence


def fmt(value: float) -> str:
    """Four significant digits; exponent notation only for large magnitudes."""
    value += 0.0  # -0.0 -> 0.0
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def shape_text(shape: Sequence[int]) -> str:
    """[8, 32, 32] -> "8×32×32" (unknown sides as "?")."""
    return "×".join("?" if d < 0 else str(d) for d in shape) or "-"


def label_text(label: str, auc: float) -> str:
    """A channel's label from its per-image responses as it stands beside the channel:
    "face (AUC 0.98)"."""
    return f"{label} (AUC {auc:.2f})"


def histogram_heights(counts: Sequence[int]) -> list[int]:
    """Each bin's bar height in percent of the tallest (the small per-channel histogram)."""
    peak = max(counts, default=0) or 1
    return [round(100 * count / peak) for count in counts]
