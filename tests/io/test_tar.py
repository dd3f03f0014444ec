"""The tar reader against Python's tarfile as the reference encoder (ustar, GNU and PAX shards,
long names, every entry type), and against hostile headers: damage is a TarError with its byte,
never a hang, a huge allocation or a silent end."""

from __future__ import annotations

import io
import tarfile

import pytest

from aidetect.io.tar import MAX_META_BYTES, TarError, TarReader, TruncatedMember


class Unseekable(io.RawIOBase):
    """A stream that can only be read forward, like an S3 body."""

    def __init__(self, data: bytes) -> None:
        self.inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, n: int = -1) -> bytes:
        return self.inner.read(n)


def make_tar(entries: list[tuple[str, bytes | str | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """(name, data) files; data None makes a folder, a str a symlink to it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def read_all(data: bytes, seekable: bool = True) -> list[tuple[bytes, bool, bytes | None]]:
    reader = TarReader(io.BytesIO(data) if seekable else Unseekable(data))
    return [(m.name, m.is_file, reader.read_data(m) if m.is_file and m.size % 2 else None) for m in reader]


ENTRIES = [
    ("000010001.jpg", b"\xff\xd8" + bytes(range(256)) * 3),
    ("000010001.json", b'{"caption": "x"}'),
    ("sub/folder", None),
    ("000010002.txt", b"a dog"),
    ("link.jpg", "000010001.jpg"),
    ("deep/" + "d" * 120 + "/" + "n" * 150 + ".png", b"\x89PNG" + b"z" * 999),  # beyond ustar's 100+155
    ("ünïcødé name.webp", b"RIFF" + b"w" * 513),
    ("empty.jpg", b""),
]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
@pytest.mark.parametrize("seekable", [True, False])
def test_members_match_tarfile(fmt, seekable):
    data = make_tar(ENTRIES, fmt)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        expected = [
            (
                m.name.encode("utf-8", "surrogateescape"),
                m.isfile(),
                tar.extractfile(m).read() if m.isfile() and m.size % 2 else None,
            )
            for m in tar.getmembers()
        ]
    assert read_all(data, seekable) == expected
    reader = TarReader(io.BytesIO(data))
    sizes = {m.name: (m.size, m.mtime) for m in reader}
    assert sizes[b"000010001.jpg"] == (len(ENTRIES[0][1]), 1_700_000_000)


def test_ustar_prefix_names():
    name = "p" * 90 + "/" + "q" * 90 + ".jpg"  # fits ustar's prefix + name fields, no extension header
    data = make_tar([(name, b"abc")], tarfile.USTAR_FORMAT)
    assert [m.name for m in TarReader(io.BytesIO(data))] == [name.encode()]


def test_base256_size():
    data = bytearray(make_tar([("a.jpg", b"x" * 700)], tarfile.GNU_FORMAT))
    header = data[:512]
    header[124:136] = b"\x80" + (700).to_bytes(11, "big")
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    data[:512] = header
    (member,) = list(TarReader(io.BytesIO(bytes(data))))
    assert member.size == 700


def test_truncated_member_keeps_earlier_members():
    data = make_tar([("a.jpg", b"a" * 1000), ("b.jpg", b"b" * 5000)])
    cut = data[: data.index(b"b" * 100) + 2000]
    reader = TarReader(Unseekable(cut))
    first = next(iter_ := iter(reader))
    assert reader.read_data(first) == b"a" * 1000
    second = next(iter_)
    with pytest.raises(TruncatedMember, match="2000 of 5000 bytes"):
        reader.read_data(second)
    assert list(iter_) == []


@pytest.mark.parametrize("damage", ["checksum", "half header", "huge pax", "bad size", "bad pax"])
def test_damage_is_an_error_with_its_offset(damage):
    data = bytearray(make_tar([("a.jpg", b"a" * 600), ("b.jpg", b"b" * 10)]))
    second = 512 + 1024  # PAX puts no extension header on these short names
    if damage == "checksum":
        data[second + 1] ^= 0xFF
    elif damage == "half header":
        data = data[: second + 300]
    elif damage == "bad size":
        data[second + 124 : second + 136] = b"zzzzzzzzzzz\0"
        data[second + 148 : second + 156] = b" " * 8
        data[second + 148 : second + 156] = f"{sum(data[second : second + 512]):06o}\0 ".encode()
    else:
        pax = make_tar([("x" * 200 + ".jpg", b"c")])
        block = bytearray(pax[:512])  # the PAX extension header
        size = MAX_META_BYTES + 1 if damage == "huge pax" else 512
        block[124:136] = f"{size:011o}\0".encode()
        block[148:156] = b" " * 8
        block[148:156] = f"{sum(block):06o}\0 ".encode()
        body = b"" if damage == "huge pax" else b"99 garbage\n".ljust(512, b"\0")
        data = data[:second] + block + body + bytes(1024)
    reader = TarReader(io.BytesIO(bytes(data)))
    with pytest.raises(TarError, match=f"damaged tar at byte {second}"):
        list(reader)


def test_end_without_zero_blocks_and_zero_block_end():
    data = make_tar([("a.jpg", b"a")])
    assert [m.name for m in TarReader(io.BytesIO(data[:1024]))] == [b"a.jpg"]  # header + data, no end blocks
    assert list(TarReader(io.BytesIO(bytes(1024)))) == []


def test_read_data_only_once_and_only_current():
    data = make_tar([("a.jpg", b"a"), ("b.jpg", b"b")])
    reader = TarReader(io.BytesIO(data))
    it = iter(reader)
    first = next(it)
    reader.read_data(first)
    with pytest.raises(ValueError):
        reader.read_data(first)
    next(it)
    with pytest.raises(ValueError):
        reader.read_data(first)


def test_a_negative_pax_size_is_damage():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a.jpg")
        info.size, info.pax_headers = 1, {"size": "-5"}
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(TarError, match="negative size"):
        list(TarReader(io.BytesIO(buf.getvalue())))


@pytest.mark.parametrize("value", ["inf", "nan", "-1e400", "12x"])
def test_a_pax_mtime_that_is_no_time_is_none(value):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a.jpg")
        info.size, info.pax_headers = 1, {"mtime": value}
        tar.addfile(info, io.BytesIO(b"x"))
    (member,) = list(TarReader(io.BytesIO(buf.getvalue())))
    assert member.mtime is None and member.size == 1


def test_a_name_longer_than_path_max_is_damage():
    data = make_tar([("n" * 5000 + ".jpg", b"x")])
    with pytest.raises(TarError, match="member name of 5004 bytes"):
        list(TarReader(io.BytesIO(data)))
