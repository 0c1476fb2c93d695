"""Writing matplotlib figures of the training tools."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: str | Path, dpi: int) -> Path:
    """Lay out ``fig``, write it to ``path`` (creating folders) as PNG and close it."""
    import matplotlib.pyplot as plt  # noqa: PLC0415 - plotting is optional at import time

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
