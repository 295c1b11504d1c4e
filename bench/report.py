"""The performance figures as text tables: medians, spreads and ratios."""

from __future__ import annotations

from typing import Any

LIMIT_READ = "PyTables -> Arrow -> pandas (limit)"
LIMIT_UPLOAD = "upload PyTables (limit)"
O2P_TUNED_PREFIX = "omero2pandas tuned"
O2P_DEFAULT_PREFIX = "omero2pandas default"
O2P_UPLOAD = "upload omero2pandas (default chunk)"


def _median(figures: dict[str, Any], prefix: str) -> float | None:
    for name, t in figures.items():
        if name.startswith(prefix):
            return t["median_s"]
    return None


def _cell(t: dict[str, Any]) -> str:
    if len(t["runs_s"]) == 1:
        return f"{t['median_s']:8.3f}  (1 run)      "
    return f"{t['median_s']:8.3f}  ({t['min_s']:.3f}-{t['max_s']:.3f})".ljust(26)


def _block(title: str, figures: dict[str, Any], limit: str, o2p: list[tuple[str, str]]
           ) -> list[str]:
    """One table: each contender's median (spread), its ratio to the limit and to omero2pandas."""
    limit_s = figures.get(limit, {}).get("median_s")
    refs = [(label, _median(figures, prefix)) for label, prefix in o2p]
    head = f"  {title:40}{'median s (min-max)':26}{'x limit':>9}" + "".join(
        f"{label:>15}" for label, _ in refs)
    lines = [head]
    for name, t in figures.items():
        ratio = f"{t['median_s'] / limit_s:8.2f}x" if limit_s else " " * 9
        speedups = "".join(
            f"{ref / t['median_s']:14.1f}x" if ref else " " * 15 for _, ref in refs)
        lines.append(f"  {name:40}{_cell(t)}{ratio}{speedups}")
    return lines


def format_results(results: dict[str, Any]) -> str:
    """Every table's uploads and reads, then peak memory."""
    lines: list[str] = []
    for entry in results["tables"]:
        lines.append(f"{entry['kind']} table: {entry['rows']:,} rows x {entry['columns']} "
                     "columns (seconds; 'x limit' = median / PyTables median; 'vs o2p' = "
                     "omero2pandas median / this median, >1 is faster)")
        lines += _block("upload a DataFrame", entry["uploads"], LIMIT_UPLOAD,
                        [("vs o2p", "upload omero2pandas")])
        for what, figures in entry["reads"].items():
            lines += _block(f"read into pandas: {what}", figures, LIMIT_READ,
                            [("vs o2p default", O2P_DEFAULT_PREFIX),
                             ("vs o2p tuned", O2P_TUNED_PREFIX)])
        if entry["rows"] > results.get("o2p_default_max_rows", 0):
            lines.append(f"  (above {results['o2p_default_max_rows']:,} rows omero2pandas's "
                         "whole-table and column-subset reads run once: ~25 s per million "
                         "rows with its default chunk size)")
        lines.append("")
    if results.get("memory"):
        lines.append("peak resident memory above start/baseline while streaming the narrow "
                     "table (MiB)")
        sizes = list(results["memory"])
        lines.append(f"  {'':52}" + "".join(f"{int(s):>14,} rows" for s in sizes))
        keys = [("server (bridge process)", "server_peak_delta_mib"),
                ("OMERO stand-in (Ice path only)", "omero_peak_delta_mib"),
                ("client: stream and discard", "client_stream_discard_mib"),
                ("client: read_table (holds the result)", "client_read_table_mib"),
                ("client: the resulting DataFrame", "client_dataframe_mib")]
        for label in results["memory"][sizes[0]]:
            for key_label, key in keys:
                cells = []
                for s in sizes:
                    value = results["memory"][s][label][key]
                    cells.append(f"{value:>19.1f}" if value is not None else " " * 19)
                if any(c.strip() for c in cells):
                    lines.append(f"  {label + ': ' + key_label:52}" + "".join(cells))
    return "\n".join(lines)
