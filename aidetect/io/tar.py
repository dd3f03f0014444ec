"""A tar reader for hostile shards: headers one at a time from a stream, nothing held but one member.

Python's `tarfile` reads a PAX or GNU long-name header whole, whatever size it claims, and mixes
damage with end-of-archive; this reader caps every header at `MAX_META_BYTES`, says at which byte
a shard is damaged, and skips data by seeking when the stream can (a local file) or by reading
and dropping it in 1 MiB chunks when it cannot (an S3 body). It knows ustar, GNU (long names,
base-256 sizes) and POSIX PAX (path, size, mtime), which is what webdataset writers produce.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

BLOCK = 512
MAX_META_BYTES = 1 << 20  # a PAX header beyond this is damage, not metadata
MAX_NAME_BYTES = 4096  # PATH_MAX: a longer member name could not be extracted anywhere
_CHUNK = 1 << 20
_FILE_TYPES = (b"0", b"\0", b"7")
_META_TYPES = (b"L", b"K", b"x", b"g")


class TarError(ValueError):
    """The shard is damaged at `offset`: nothing after it can be trusted."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"damaged tar at byte {offset}: {reason}")
        self.offset = offset


class TruncatedMember(TarError):
    """A member's data ends before the size its header gives."""

    def __init__(self, offset: int, got: int, size: int) -> None:
        ValueError.__init__(self, f"truncated tar member: {got} of {size} bytes")
        self.offset = offset


@dataclass(frozen=True, slots=True)
class TarMember:
    """One entry's header: its raw name, what it is, and where its data lies."""

    name: bytes
    size: int
    mtime: float | None
    is_file: bool
    offset: int  # of its data in the shard


def _number(field: bytes, what: str, offset: int) -> int:
    """An octal field, or GNU's base-256 (first byte 0x80 positive, 0xff negative)."""
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return -((1 << (8 * len(field) - 8)) - value) if field[0] == 0xFF else value
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarError(offset, f"bad {what} field {text[:16]!r}") from None


def _checksum_ok(block: bytes) -> bool:
    stored = block[148:156].split(b"\0", 1)[0].strip(b" ")
    try:
        expected = int(stored, 8)
    except ValueError:
        return False
    blanked = block[:148] + b" " * 8 + block[156:]
    unsigned = sum(blanked)
    signed = unsigned - 256 * sum(b > 127 for b in blanked)  # some old writers sum signed chars
    return expected in (unsigned, signed)


def _pax_records(data: bytes, offset: int) -> dict[bytes, bytes]:
    """`LEN key=value\\n` records; LEN counts the whole record."""
    found: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos : pos + 1] != b"\0":
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarError(offset, "bad PAX record") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or space < 0 or not record.endswith(b"\n") or b"=" not in record:
            raise TarError(offset, "bad PAX record")
        key, _, value = record[:-1].partition(b"=")
        found[key] = value
        pos += length
    return found


class TarReader:
    """Members of a tar stream in order. Iterating skips whatever of the previous member's data
    was not read; `read_data` reads the current member's (once, before the next header)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.position = 0  # bytes of the shard consumed
        self._left = 0  # data (and padding) of the current member still unread
        self._current: TarMember | None = None
        self.failed: OSError | None = None  # a read error of the stream: nothing after it can be read
        try:
            self._seekable = bool(stream.seekable())
        except (AttributeError, OSError):
            self._seekable = False

    def _read(self, n: int) -> bytes:
        try:
            data = self.stream.read(n)
        except OSError as exc:
            self.failed = exc
            raise
        self.position += len(data)
        return data

    def _skip(self, n: int) -> None:
        if n <= 0:
            return
        if self._seekable:  # a seek past the end is found by the next header read (short)
            self.stream.seek(n, 1)
            self.position += n
            return
        while n > 0:
            got = len(self._read(min(n, _CHUNK)))
            if not got:
                return
            n -= got

    def read_data(self, member: TarMember) -> bytes:
        """The current member's bytes; raises TarError (truncated) when the shard ends first."""
        if member is not self._current:
            raise ValueError("read_data: not the current member, or read already")
        self._current = None
        data = self._read(member.size)
        self._left -= len(data)
        if len(data) < member.size:
            raise TruncatedMember(self.position, len(data), member.size)
        return data

    def __iter__(self) -> Iterator[TarMember]:
        while True:
            self._skip(self._left)
            self._left = 0
            member = self._next_member()
            if member is None:
                return
            self._current = member
            self._left = -(-member.size // BLOCK) * BLOCK
            yield member

    def _header(self) -> bytes | None:
        """The next header block; None at the end (a zero block, or the shard ends there)."""
        start = self.position
        block = self._read(BLOCK)
        if not block or block == bytes(BLOCK):
            return None
        if len(block) < BLOCK:
            raise TarError(start, "shard ends inside a header")
        if not _checksum_ok(block):
            raise TarError(start, "header checksum mismatch")
        return block

    def _meta(self, size: int, start: int) -> bytes:
        if size > MAX_META_BYTES:
            raise TarError(start, f"extended header of {size} bytes")
        data = self._read(size)
        if len(data) < size:
            raise TarError(self.position, "shard ends inside an extended header")
        self._skip(-(-size // BLOCK) * BLOCK - size)
        return data

    def _next_member(self) -> TarMember | None:
        long_name: bytes | None = None
        pax: dict[bytes, bytes] = {}
        while True:
            start = self.position
            block = self._header()
            if block is None:
                return None
            kind = block[156:157]
            size = _number(block[124:136], "size", start)
            if size < 0:
                raise TarError(start, "negative size")
            if kind in _META_TYPES:
                data = self._meta(size, start)
                if kind == b"L":
                    long_name = data.split(b"\0", 1)[0]
                elif kind == b"x":
                    pax.update(_pax_records(data, start))
                continue  # 'K' (long link target) and 'g' (global PAX) change no member we read
            return self._member(block, kind, size, start, long_name, pax)

    def _member(
        self, block: bytes, kind: bytes, size: int, start: int, long_name: bytes | None, pax: dict[bytes, bytes]
    ) -> TarMember:
        name = block[:100].split(b"\0", 1)[0]
        if block[257:263] == b"ustar\x00" and block[345] != 0:
            name = block[345:500].split(b"\0", 1)[0] + b"/" + name  # POSIX ustar prefix
        name = pax.get(b"path", long_name or name)
        if len(name) > MAX_NAME_BYTES:  # every row holds its name: a shard of 1 MiB names would fill memory
            raise TarError(start, f"member name of {len(name)} bytes (limit {MAX_NAME_BYTES})")
        if b"size" in pax:
            try:
                size = int(pax[b"size"])
            except ValueError:
                raise TarError(start, "bad PAX size") from None
            if size < 0:  # read(-n) reads to the end: never let a size be negative
                raise TarError(start, "negative size")
        mtime: float | None = _number(block[136:148], "mtime", start)
        if b"mtime" in pax:
            try:
                mtime = float(pax[b"mtime"])
            except ValueError:
                mtime = None
            if mtime is not None and not math.isfinite(mtime):  # "inf" and "nan" parse as floats
                mtime = None
        if kind in (b"1", b"2", b"3", b"4", b"5", b"6"):
            size = 0  # links, devices and folders carry no data, whatever the field says
        is_file = kind in _FILE_TYPES and not name.endswith(b"/")  # old writers mark folders by the slash
        return TarMember(name if is_file else name.rstrip(b"/") or name, size, mtime, is_file, self.position)
