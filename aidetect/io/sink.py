"""Sink: verdict rows -> a Parquet dataset of atomically committed part files.

Rows are buffered and committed as a part every `flush_rows` rows or `flush_seconds`, so at any
moment (after a crash or `kill -9` too) `pandas.read_parquet(OUTPUT)` reads every committed row
and nothing half-written. The same folder is the resume index for the next run (resume.py).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa

from aidetect.io.parts import PART_PREFIX, open_store, part_names, prepare_output, read_part, table_bytes
from aidetect.io.resume import ResumeIndex, column_mtime, drop_rows, heal_duplicates, load_index
from aidetect.records import Row

SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("prob_ai", pa.float32()),
        pa.field("prob_spread", pa.float32()),
        pa.field("error", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("bytes", pa.int64()),
        pa.field("mtime", pa.timestamp("ns", tz="UTC")),
        pa.field("etag", pa.string()),
        pa.field("model", pa.string()),
        pa.field("scanned_at", pa.timestamp("us", tz="UTC")),
        pa.field("provenance", pa.string()),
        pa.field("generator", pa.string()),
        pa.field("c2pa_state", pa.string()),
        pa.field("verdict", pa.string()),
        pa.field("verdict_source", pa.string()),
        pa.field("provenance_partial", pa.bool_()),
        pa.field("watermark_bits", pa.string()),
        pa.field("source_type", pa.string()),
        pa.field("in_domain", pa.bool_()),
        pa.field("crops", pa.int16()),
        pa.field("prob_ai_max", pa.float32()),
        pa.field("generator_pred", pa.string()),
        pa.field("generator_prob", pa.float32()),
        pa.field("key", pa.string()),  # a container member's sample key (webdataset) or row key (Parquet)
    ]
)


@dataclass
class ParquetSink:
    """Appends rows and commits them as part files every `flush_rows` rows or `flush_seconds`."""

    location: str
    model: str
    flush_rows: int = 2048
    flush_seconds: float = 5.0
    _buffer: list[Row] = field(default_factory=list)
    _last_flush: float = field(default_factory=time.monotonic)
    run_id: str = field(default_factory=lambda: time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6])
    _parts: int = 0
    superseded: set[str] = field(default_factory=set)  # paths whose older rows the new ones replace

    def __post_init__(self) -> None:
        self.store = open_store(self.location)

    def open(self, overwrite: bool) -> ResumeIndex:
        """Claim and lock the output and return what it already holds (empty with `overwrite`)."""
        prepare_output(self.store, overwrite, json.dumps({"written_by": "aidetect", "schema": SCHEMA.names}).encode())
        index = load_index(self.store)
        if index.has_duplicates:
            heal_duplicates(self.store)
            index = load_index(self.store)
        return index

    def write(self, rows: Iterable[Row]) -> None:
        self._buffer.extend(rows)
        if len(self._buffer) >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        name = f"{PART_PREFIX}{self.run_id}-{self._parts:05d}.parquet"
        self.store.put(name, table_bytes(rows_to_table(self._buffer, self.model)))
        self._parts += 1
        self._buffer.clear()

    def close(self) -> None:
        try:
            self.flush()
            if self.superseded:
                drop_rows(self.store, self.superseded, keep_run=self.run_id)
                self.superseded.clear()
            if not part_names(self.store):
                # A scan that found nothing still leaves a dataset with the columns, so that
                # `df[df.label == "ai"]` on it is an empty frame rather than a KeyError.
                self.store.put(f"{PART_PREFIX}{self.run_id}-empty.parquet", table_bytes(SCHEMA.empty_table()))
        finally:
            self.store.unlock()

    def read_all(self) -> pa.Table:
        tables = [read_part(self.store, n) for n in part_names(self.store)]
        return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def warm_up() -> None:
    """Build one array: pyarrow imports pandas and its compute kernels on the first (~0.3 s).
    Run in a thread while the model loads, that cost leaves the first batch's path."""
    pa.array([0.0], type=pa.float32())


def rows_to_table(rows: list[Row], model: str) -> pa.Table:
    now = dt.datetime.now(dt.timezone.utc)
    cols = {
        "path": [r.ref.key for r in rows],
        "label": [r.label for r in rows],
        "prob_ai": [r.prob_ai for r in rows],
        "prob_spread": [r.prob_spread for r in rows],
        "error": [r.error for r in rows],
        "width": [r.width for r in rows],
        "height": [r.height for r in rows],
        "bytes": [r.ref.size for r in rows],
        "mtime": [column_mtime(r.ref.mtime_ns) for r in rows],
        "etag": [r.ref.etag for r in rows],
        "model": [model] * len(rows),
        "scanned_at": [now] * len(rows),
        "provenance": [r.provenance.kind for r in rows],
        "generator": [r.provenance.generator for r in rows],
        "c2pa_state": [r.provenance.c2pa_state for r in rows],
        "verdict": [r.verdict[0] for r in rows],
        "verdict_source": [r.verdict[1] for r in rows],
        "provenance_partial": [r.provenance.partial or None for r in rows],
        "watermark_bits": [r.provenance.watermark_bits for r in rows],
        "source_type": [r.provenance.source_type for r in rows],
        "in_domain": [r.in_domain for r in rows],
        "crops": [r.crops for r in rows],
        "prob_ai_max": [r.prob_ai_max for r in rows],
        "generator_pred": [r.generator_pred for r in rows],
        "generator_prob": [r.generator_prob for r in rows],
        "key": [r.ref.sample for r in rows],
    }
    return pa.Table.from_pydict(cols, schema=SCHEMA)
