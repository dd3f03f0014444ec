"""Parquet files of image bytes: each row's encoded image becomes one ref.

The file is read in small record batches of two columns only (the image, and the key when one is
named), so memory holds a page of a column, never the file. The image column is `--image-column`,
or else the one binary column or Hugging Face's image struct (`{bytes, path}`); when that choice
is ambiguous a file the user named refuses in one line and a file found in a folder gets an
error row. A row's `key` is its `--key-column` value, or its position in the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq

from aidetect.errors import SourceError
from aidetect.io.containers import ContainerSpec, Keep, chained, container_row, member_ref
from aidetect.io.s3 import arrow_path
from aidetect.io.sources import WalkStats
from aidetect.records import ImageRef, Payload

ROWS_PER_READ = 16  # rows decoded at a time: a few pages of the image column
MAX_EXPANSION = 8  # image bytes compress by a few percent; far more is not images
MAX_EXPANDED_BYTES = 64 << 20  # small row groups may compress well (a column of tiny PNGs)
MAX_KEY_CHARS = 4096


class NoImageColumn(SourceError):
    """A table with no column that could hold images: metadata, not images (skipped in folders)."""


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)


def _is_image_struct(t: pa.DataType) -> bool:
    """Hugging Face datasets' `Image` feature: a struct of `bytes` (binary) and `path`."""
    return pa.types.is_struct(t) and t.get_field_index("bytes") >= 0 and _is_binary(t.field("bytes").type)


def image_column(schema: pa.Schema, wanted: str | None) -> str:
    """The column that holds the images, or a SourceError saying why there is no single one."""
    if wanted is not None:
        if wanted not in schema.names:
            raise SourceError(f"no column '{wanted}' (columns: {', '.join(schema.names)})")
        kind = schema.field(wanted).type
        if not (_is_binary(kind) or _is_image_struct(kind)):
            raise SourceError(f"column '{wanted}' holds {kind}, not image bytes")
        return wanted
    found = [f.name for f in schema if _is_binary(f.type) or _is_image_struct(f.type)]
    if not found:
        raise NoImageColumn(f"no column of image bytes (columns: {', '.join(schema.names)})")
    if len(found) > 1:
        raise SourceError(f"several columns could hold the images ({', '.join(found)}): choose one with --image-column")
    return found[0]


def key_column(schema: pa.Schema, wanted: str | None) -> str | None:
    if wanted is not None and wanted not in schema.names:
        raise SourceError(f"no key column '{wanted}' (columns: {', '.join(schema.names)})")
    return wanted


def _open(ref: ImageRef):
    """pyarrow's ParquetFile over the local file or the S3 object (ranged reads, no download)."""
    path, filesystem = arrow_path(ref.path)
    source = filesystem.open_input_file(path) if filesystem is not None else path
    return pq.ParquetFile(source, pre_buffer=False, buffer_size=1 << 20)


def check_table(source: str, spec: ContainerSpec) -> None:
    """A Parquet file the user named: refuse in one line when it cannot be scanned."""
    ref = ImageRef(source, source, None, None)
    try:
        schema = _open(ref).schema_arrow
    except Exception as exc:  # as in table_members: any failure to read the footer
        raise SourceError(f"{source}: not a readable Parquet file ({_first_line(exc)})") from None
    try:
        image_column(schema, spec.image_column)
        key_column(schema, spec.key_column)
    except SourceError as exc:
        raise SourceError(f"{source}: {exc}") from None


def table_members(table: ImageRef, spec: ContainerSpec, keep: Keep, stats: WalkStats) -> Iterator[ImageRef]:
    """A ref per row of a Parquet file; a file that is not Parquet, or that fails mid-read, ends
    with its own row (rows read before keep theirs)."""
    position = 0
    try:
        parquet = _open(table)
        schema = parquet.schema_arrow
        try:
            images, keys = image_column(schema, spec.image_column), key_column(schema, spec.key_column)
        except NoImageColumn:  # img2dataset keeps metadata tables beside its shards: not images
            stats.ignored += 1
            return
        columns = [images] if keys is None or keys == images else [images, keys]
        for group in range(parquet.num_row_groups):
            _check_expansion(parquet.metadata.row_group(group), images, keys, group)
            for batch in parquet.iter_batches(batch_size=ROWS_PER_READ, row_groups=[group], columns=columns):
                cells = batch.column(0)
                if pa.types.is_struct(cells.type):
                    cells = cells.field("bytes")
                names = (
                    batch.column(columns.index(keys)).to_pylist() if keys else range(position, position + len(batch))
                )
                for i, name in enumerate(names):
                    yield _row(table, cells[i], str(name), position + i, spec, keep)
                position += len(batch)
        return
    except SourceError as exc:
        problem = str(exc)
    except Exception as exc:  # pyarrow raises many types on a malformed file (UnicodeDecodeError, ...)
        problem = f"not a readable Parquet file: {_first_line(exc)}" if not position else _first_line(exc)
    suffix = f" at row {position} (rows after it not scanned)" if position else ""
    yield container_row(table, problem + suffix)


def _check_expansion(group: pq.RowGroupMetaData, images: str, keys: str | None, index: int) -> None:
    """Refuse a decompression bomb from the footer, before pyarrow inflates a page whole: encoded
    images do not compress, so an image column that expands many times over is not images; keys
    are text and do compress, so they are held to MAX_KEY_CHARS a row on average."""
    packed, unpacked = _column_sizes(group, images)
    if unpacked > MAX_EXPANDED_BYTES and unpacked > MAX_EXPANSION * max(packed, 1):
        raise SourceError(
            f"row group {index} would expand from {packed} to {unpacked} bytes (encoded images do not "
            "compress): refused as a decompression bomb"
        )
    key_bytes = _column_sizes(group, keys)[1] if keys and keys != images else 0
    if key_bytes > MAX_EXPANDED_BYTES and key_bytes > MAX_KEY_CHARS * group.num_rows:
        raise SourceError(
            f"row group {index}: --key-column would expand to {key_bytes} bytes for {group.num_rows} rows"
        )


def _column_sizes(group: pq.RowGroupMetaData, column: str) -> tuple[int, int]:
    """(compressed, uncompressed) bytes of a column's chunks in a row group (a struct has several)."""
    chunks = [group.column(c) for c in range(group.num_columns)]
    leaf = [c for c in chunks if c.path_in_schema == column or c.path_in_schema.startswith(column + ".")]
    return sum(c.total_compressed_size for c in leaf), sum(c.total_uncompressed_size for c in leaf)


def _row(table: ImageRef, cell: pa.Scalar, key: str, row: int, spec: ContainerSpec, keep: Keep) -> ImageRef:
    too_long = len(key) > MAX_KEY_CHARS
    key = str(row) if too_long else key  # every row holds its key: never a megabyte each
    size = cell.as_buffer().size if cell.is_valid else 0
    ref = member_ref(table, chained("parquet", key, table.key), size, table.mtime_ns, key)
    if too_long:
        payload = Payload(problem=f"--key-column value over {MAX_KEY_CHARS} characters (key is the row's position)")
    elif not cell.is_valid:
        payload = Payload(problem="no image bytes (null cell)")
    elif size <= spec.max_bytes and keep(ref):
        payload = Payload(cell.as_py())
    else:
        payload = Payload(problem="not read")
    return replace(ref, payload=payload)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]
