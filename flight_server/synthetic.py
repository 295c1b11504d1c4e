"""Synthetic measurement tables, shaped like real per-object image analysis results.

Used by ``omero-flight demo`` and by the benchmarks: one row per segmented
object with its object id, image id, ROI id, areas, intensities and a label.
Generated deterministically from a seed, chunk by chunk, so a table of any
size can be written without holding it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

LABELS = np.array(["nucleus", "cytoplasm", "membrane", "mitochondrion", "vesicle"])
OBJECTS_PER_IMAGE = 500


def measurement_batches(
    rows: int, batch_rows: int = 250_000, seed: int = 0
) -> Iterator[pa.RecordBatch]:
    """Yield ``rows`` rows of measurements as Arrow batches of ``batch_rows``."""
    rng = np.random.default_rng(seed)
    for start in range(0, rows, batch_rows):
        n = min(batch_rows, rows - start)
        object_id = np.arange(start, start + n, dtype=np.int64)
        image = object_id // OBJECTS_PER_IMAGE + 1
        area = rng.gamma(4.0, 60.0, n)
        yield pa.RecordBatch.from_pydict(
            {
                "object": object_id,
                "image": image,
                "roi": object_id + 1,
                "area": area,
                "perimeter": 2.0 * np.sqrt(np.pi * area) * rng.uniform(1.0, 1.3, n),
                "mean_intensity": rng.lognormal(6.0, 0.5, n),
                "max_intensity": rng.lognormal(7.0, 0.4, n),
                "label": LABELS[rng.integers(0, len(LABELS), n)],
            }
        )


def measurement_table(rows: int, seed: int = 0) -> pd.DataFrame:
    """The whole table as a DataFrame (for sizes that fit in memory)."""
    batches = list(measurement_batches(rows, seed=seed))
    return pa.Table.from_batches(batches).to_pandas()


def write_measurement_csv(path: str | Path, rows: int, seed: int = 0) -> Path:
    """Write the table to a CSV file chunk by chunk, never holding it whole."""
    path = Path(path)
    batches = measurement_batches(rows, seed=seed)
    schema = next(measurement_batches(1, seed=seed)).schema
    with pacsv.CSVWriter(path, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return path
