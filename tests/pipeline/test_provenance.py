"""Provenance evidence: generator chunks, EXIF, IPTC/XMP and signed C2PA manifests, end to end."""

from __future__ import annotations

import os
import struct

import pandas as pd
import pytest
from helpers.cli import run_cli
from helpers.images import encode, photo
from helpers.provenance_files import AI_TYPE, EDITED_TYPE, ThrowawayCA, jpeg_with, png_chunk, png_with_text, xmp_packet

from aidetect.pipeline import provenance


@pytest.fixture(scope="module")
def ca():
    return ThrowawayCA()


def corpus(folder, ca) -> dict[str, tuple]:
    """name -> (provenance, generator, c2pa_state, verdict_source)."""
    plain_jpeg = encode(photo(40, 40, seed=1), "JPEG")
    plain_png = encode(photo(40, 40, seed=2), "PNG")
    plain_webp = encode(photo(40, 40, seed=3), "WEBP")
    signed_jpeg = ca.sign(plain_jpeg, "image/jpeg")
    tampered = bytearray(signed_jpeg)
    tampered[-40] ^= 0xFF  # in the image data, after signing
    files = {
        "a1111.png": (
            png_with_text({"parameters": "a cat, Steps: 20, Sampler: Euler a, Model: sd15"}),
            ("sd-parameters", "Stable Diffusion", None, "provenance"),
        ),
        "comfy.png": (
            png_with_text({"prompt": '{"3": {"class_type": "KSampler"}}'}, after_idat={"workflow": "{}"}),
            ("comfyui", "ComfyUI", None, "provenance"),
        ),
        "comfy-after-idat.png": (
            png_with_text({}, after_idat={"prompt": "{}"}),
            ("comfyui", "ComfyUI", None, "provenance"),
        ),
        "exif-midjourney.jpg": (
            jpeg_with(software="Midjourney v6"),
            ("exif-software", "Midjourney", None, "provenance"),
        ),
        "xmp-iptc.jpg": (jpeg_with(xmp=xmp_packet(AI_TYPE)), ("iptc-digital-source-type", None, None, "provenance")),
        "xmp-edited.jpg": (jpeg_with(xmp=xmp_packet(EDITED_TYPE)), ("iptc-digital-source-type", None, None, "model")),
        "photoshop.jpg": (jpeg_with(software="Adobe Photoshop 25.0"), (None, None, None, "model")),
        "c2pa.jpg": (signed_jpeg, ("c2pa", "Adobe Firefly", "valid", "provenance")),
        "c2pa.png": (ca.sign(plain_png, "image/png"), ("c2pa", "Adobe Firefly", "valid", "provenance")),
        "c2pa.webp": (ca.sign(plain_webp, "image/webp"), ("c2pa", "Adobe Firefly", "valid", "provenance")),
        "c2pa-tampered.jpg": (bytes(tampered), ("c2pa", "Adobe Firefly", "invalid", "model")),
        "c2pa-camera.jpg": (
            ca.sign(
                plain_jpeg, "image/jpeg", "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture", "Test Camera"
            ),
            ("c2pa", "Test Camera", "valid", "model"),
        ),
        "plain.jpg": (plain_jpeg, (None, None, None, "model")),
        "plain.png": (plain_png, (None, None, None, "model")),
        "plain.webp": (plain_webp, (None, None, None, "model")),
    }
    folder.mkdir()
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: expected for name, (_, expected) in files.items()}


def test_scan_reports_provenance_beside_the_model(tmp_path, model_path, ca):
    expected = corpus(tmp_path / "in", ca)
    (tmp_path / "ca.pem").write_bytes(ca.ca_pem)
    out = tmp_path / "out.parquet"
    proc = run_cli("scan", str(tmp_path / "in"), "-o", str(out), "--model", model_path)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(out)
    df["name"] = df.path.map(os.path.basename)
    rows = df.set_index("name")
    for name, (kind, generator, state, source) in expected.items():
        row = rows.loc[name]
        got = tuple(None if pd.isna(v) else v for v in (row.provenance, row.generator, row.c2pa_state))
        assert got == (kind, generator, state), name
        assert row.verdict_source == source, name
        assert row.verdict == ("ai" if source == "provenance" else row.label), name
        assert row.label in ("ai", "real")  # the model's own answer is kept
    decided = sum(1 for e in expected.values() if e[3] == "provenance")
    assert f"{decided} decided by provenance" in proc.stderr.decode()

    trusted = run_cli(
        "scan",
        str(tmp_path / "in" / "c2pa.png"),
        "-o",
        "-",
        "--model",
        model_path,
        "--c2pa-trust",
        str(tmp_path / "ca.pem"),
    )
    import io

    assert pd.read_parquet(io.BytesIO(trusted.stdout)).c2pa_state.tolist() == ["trusted"]
    off = run_cli("scan", str(tmp_path / "in"), "-o", "-", "--model", model_path, "--no-provenance")
    plain = pd.read_parquet(io.BytesIO(off.stdout))
    assert plain.provenance.isna().all() and (plain.verdict_source == "model").all()


def test_walk_finds_text_chunks_after_idat():
    found = provenance.walk(png_with_text({}, after_idat={"parameters": "x"}), "PNG")
    assert found.texts == {"parameters": "x"}


HOSTILE = {
    "png truncated chunk": lambda: encode(photo(8, 8), "PNG")[:40],
    "png huge length": lambda: encode(photo(8, 8), "PNG")[:33] + struct.pack(">I", 0xFFFFFFF0) + b"tEXt" + b"x" * 20,
    "png bad ztxt": lambda: encode(photo(8, 8), "PNG")[:33] + png_chunk(b"zTXt", b"k\x00\x00" + b"\x78garbage"),
    "png ztxt bomb": lambda: (
        encode(photo(8, 8), "PNG")[:33]
        + png_chunk(b"zTXt", b"junk\x00\x00" + __import__("zlib").compress(b"a" * 50_000_000))
    ),
    "jpeg huge segment": lambda: b"\xff\xd8\xff\xe1\xff\xff" + b"Exif\x00\x00II*\x00" + b"\x00" * 10,
    "jpeg bad exif": lambda: (
        b"\xff\xd8\xff\xe1\x00\x20Exif\x00\x00MM\x00*\xff\xff\xff\xff" + b"\x00" * 14 + b"\xff\xd9"
    ),
    "jpeg malformed xmp": lambda: jpeg_with(xmp=b"<x:xmpmeta><<<DigitalSourceType=" + b"\xff" * 100),
    "webp odd chunks": lambda: b"RIFF\x00\x00\x00\x00WEBPVP8 \xff\xff\xff\x7f",
    "jpeg fake jumbf": lambda: b"\xff\xd8\xff\xeb\x00\x10JP\x00\x00jumbc2pa\x00\x00\xff\xd9",
    "empty": lambda: b"",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_metadata_never_crashes_or_hangs(case):
    result = provenance.inspect(HOSTILE[case](), None)
    assert isinstance(result, provenance.Provenance)
    assert not result.decisive


CAPTURE = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
COMPUTATIONAL = "http://cv.iptc.org/newscodes/digitalsourcetype/computationalCapture"


def test_a_trusted_signed_capture_decides_real_and_nothing_less_does(tmp_path, model_path, ca):
    plain = encode(photo(40, 40, seed=9), "JPEG")
    folder = tmp_path / "in"
    folder.mkdir()
    files = {
        "capture.jpg": ca.sign(plain, "image/jpeg", CAPTURE, "Test Camera"),
        "phone.jpg": ca.sign(plain, "image/jpeg", COMPUTATIONAL, "Test Phone"),
        "capture-then-ai.jpg": ca.sign(
            plain, "image/jpeg", CAPTURE, "Test Camera", later=[("c2pa.edited", EDITED_TYPE)]
        ),
        "xmp-capture.jpg": jpeg_with(xmp=xmp_packet(CAPTURE)),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (tmp_path / "ca.pem").write_bytes(ca.ca_pem)

    def scan(*extra) -> pd.DataFrame:
        out = tmp_path / f"out{len(extra)}"
        proc = run_cli("scan", str(folder), "-o", str(out), "--model", model_path, *extra)
        assert proc.returncode == 0, proc.stderr
        df = pd.read_parquet(out)
        return df.set_index(df.path.map(os.path.basename))

    untrusted = scan()  # valid signatures from an unknown signer: reported, never decisive
    assert (untrusted.verdict_source == "model").all()
    assert untrusted.loc["capture.jpg", "c2pa_state"] == "valid"
    assert untrusted.loc["capture.jpg", "source_type"] == "digitalCapture"
    assert untrusted.loc["phone.jpg", "source_type"] == "computationalCapture"
    assert untrusted.loc["capture-then-ai.jpg", "source_type"] == "compositeWithTrainedAlgorithmicMedia"
    assert untrusted.loc["xmp-capture.jpg", "source_type"] == "digitalCapture"  # unsigned: reported only

    trusted = scan("--c2pa-trust", str(tmp_path / "ca.pem"))
    for name in ("capture.jpg", "phone.jpg"):
        row = trusted.loc[name]
        assert (row.c2pa_state, row.verdict, row.verdict_source) == ("trusted", "real", "provenance"), name
    edited = trusted.loc["capture-then-ai.jpg"]
    assert edited.c2pa_state == "trusted" and edited.verdict_source == "model"  # an AI edit: not a plain capture
    assert trusted.loc["xmp-capture.jpg", "verdict_source"] == "model"
