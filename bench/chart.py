"""The performance figures as a PNG: median seconds per contender, one panel per measurement."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(results: dict[str, Any], path: Path) -> bool:
    """Draw the chart; False (and a note) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no chart drawn")
        return False
    panels = []
    for entry in results["tables"]:
        title = f"{entry['kind']}, {entry['rows']:,} rows"
        panels.append((f"{title}: upload", entry["uploads"]))
        for what, figures in entry["reads"].items():
            panels.append((f"{title}: read {what}", figures))
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.2 * rows), squeeze=False)
    for ax, (title, figures) in zip(axes.flat, panels, strict=False):
        names = list(figures)
        medians = [figures[n]["median_s"] for n in names]
        lows = [m - figures[n]["min_s"] for m, n in zip(medians, names, strict=True)]
        highs = [figures[n]["max_s"] - m for m, n in zip(medians, names, strict=True)]
        colors = ["#999999" if "omero2pandas" in n else "#2a7ab9" if "PyTables" in n
                  else "#e07b00" for n in names]
        ax.barh(names, medians, xerr=[lows, highs], color=colors)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("seconds (median, min-max; log scale)", fontsize=7)
        for y, m in enumerate(medians):
            ax.text(m, y, f" {m:.3g} s", va="center", fontsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    machine = results.get("machine", {})
    fig.suptitle(f"omero-flight vs omero2pandas vs PyTables ({machine.get('cores')} cores, "
                 f"{machine.get('cpu', '')})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
