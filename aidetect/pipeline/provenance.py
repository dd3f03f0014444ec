"""Provenance: what an image's own metadata says about how it was made.

Cheap first: a bounds-checked walk of the container (JPEG segments up to the image data, all
PNG chunks including text after IDAT, all WebP RIFF chunks) collects EXIF, XMP, generator text
chunks and C2PA candidates in tens of microseconds. Only files that carry a C2PA/JUMBF chunk
go to the C2PA library, whose reading costs far more.

Rules: a valid C2PA manifest or an IPTC digital source type that declares generative AI
decides; generator text chunks and known generator names in EXIF/XMP decide too (a false claim
of being AI-made is rare, stripping metadata is common). An edited-with-AI source type is
reported, not decisive. A C2PA manifest that fails validation is reported and never trusted.
Absence of metadata says nothing: then the model decides.

Over 300 lines on purpose: the container walks, their budget and the rules share one `Container`
and one strength order, and every line of it runs on hostile bytes; one file keeps that whole
attack surface in view.
"""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from dataclasses import dataclass, field, replace

from aidetect.records import Provenance

IPTC_AI = "trainedAlgorithmicMedia"
IPTC_AI_EDITED = ("compositeWithTrainedAlgorithmicMedia", "algorithmicallyEnhanced", "compositeSynthetic")
# Every IPTC digital source type (cv.iptc.org/newscodes/digitalsourcetype), strongest first for the
# `source_type` column: generative types, then other synthetic ones, then captures and edits.
IPTC_SOURCE_TYPES = (
    "trainedAlgorithmicMedia",
    "compositeWithTrainedAlgorithmicMedia",
    "algorithmicMedia",
    "compositeSynthetic",
    "algorithmicallyEnhanced",
    "dataDrivenMedia",
    "digitalArt",
    "virtualRecording",
    "screenCapture",
    "compositeCapture",
    "computationalCapture",
    "digitalCapture",
    "negativeFilm",
    "positiveFilm",
    "print",
    "humanEdits",
    "minorHumanEdits",
    "composite",
    "digitalCreation",
)
# Types a generative step declares; a capture followed by one of them is no longer a plain capture.
IPTC_GENERATIVE = frozenset(
    {"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia", "algorithmicMedia", "compositeSynthetic"}
)
IPTC_CAPTURE = frozenset({"digitalCapture", "computationalCapture"})
XMP_MAX = 1 << 20  # never regex-scan more than 1 MiB of XMP
TEXT_MAX = 1 << 20  # kept of one text chunk
# What the walk spends on one file at most: text kept and inflated, all chunks together (3 MB of
# zTXt chunks can inflate to gigabytes), and the chunks or segments it visits. Past either, it
# stops and marks the result partial (the `provenance_partial` column).
TEXT_BUDGET = 4 << 20
MAX_CHUNKS = 100_000

# Generator names as they appear in EXIF Software/Artist/ImageDescription and XMP CreatorTool.
GENERATORS = [
    (re.compile(r"midjourney", re.I), "Midjourney"),
    (re.compile(r"dall[\s·\-_.]?e", re.I), "DALL·E"),
    (re.compile(r"firefly", re.I), "Adobe Firefly"),
    (re.compile(r"stable[\s_-]?diffusion|automatic1111|sd[\s_-]?xl", re.I), "Stable Diffusion"),
    (re.compile(r"comfyui", re.I), "ComfyUI"),
    (re.compile(r"novelai", re.I), "NovelAI"),
    (re.compile(r"imagen|gemini", re.I), "Google Imagen"),
    (re.compile(r"\bflux\b", re.I), "FLUX"),
    (re.compile(r"leonardo\.ai", re.I), "Leonardo.Ai"),
    (re.compile(r"ideogram", re.I), "Ideogram"),
    (re.compile(r"gpt-?4o|openai", re.I), "OpenAI"),
]

# Evidence kinds, strongest first.
STRENGTH = [
    "c2pa",
    "iptc-digital-source-type",
    "sd-watermark",
    "sd-parameters",
    "comfyui",
    "exif-software",
    "xmp-creator-tool",
]


@dataclass
class Container:
    """What the structure walk found."""

    exif: bytes | None = None
    xmp: str | None = None
    texts: dict[str, str] = field(default_factory=dict)
    c2pa: bool = False
    partial: bool = False  # the walk stopped at its budget; evidence further on was not read
    text_left: int = TEXT_BUDGET

    def take_text(self, raw: bytes, encoding: str = "utf-8") -> str | None:
        """Decode text within the file's budget; None (and partial) once it is spent."""
        if self.text_left <= 0:
            self.partial = True
            return None
        text = raw[: min(TEXT_MAX, self.text_left)].decode(encoding, "replace")
        self.text_left -= len(raw[:TEXT_MAX])
        return text

    def inflate(self, raw: bytes) -> str | None:
        """Inflate zlib text within the file's budget (never more than it, whatever the stream claims)."""
        if self.text_left <= 0:
            self.partial = True
            return None
        inflated = zlib.decompressobj().decompress(raw, min(TEXT_MAX, self.text_left))
        self.text_left -= max(len(inflated), 1)
        return inflated.decode("utf-8", "replace")


@dataclass(frozen=True)
class Evidence:
    kind: str
    generator: str | None
    decisive: bool
    says: str = "ai"


# ---- the structure walk -------------------------------------------------------------------


def walk(data: bytes, fmt: str | None) -> Container:
    """Never raises and never reads past the data, whatever the lengths in it claim."""
    try:
        if data[:2] == b"\xff\xd8":
            return _walk_jpeg(data)
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return _walk_png(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _walk_webp(data)
    except (struct.error, ValueError, IndexError, zlib.error):
        pass
    return Container()


def _walk_jpeg(data: bytes) -> Container:
    found = Container()
    pos, n = 2, len(data)
    for _ in range(MAX_CHUNKS):
        if pos + 4 > n or data[pos] != 0xFF:
            return found
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan: metadata lives before it
            return found
        (length,) = struct.unpack_from(">H", data, pos + 2)
        body = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and body.startswith(b"Exif\x00\x00"):
            found.exif = body[6:]
        elif marker == 0xE1 and body.startswith(b"http://ns.adobe.com/xap/1.0/\x00"):
            found.xmp = found.take_text(body[29:])
        elif marker == 0xEB and (b"jumb" in body[:64] or b"c2pa" in body[:64]):
            found.c2pa = True
        elif marker == 0xFE and "comment" not in found.texts:
            _keep(found, "comment", found.take_text(body))
        pos += 2 + length
    found.partial = True  # MAX_CHUNKS segments and still no image data
    return found


def _keep(found: Container, keyword: str, text: str | None) -> None:
    if text is not None:
        found.texts[keyword] = text


def _walk_png(data: bytes) -> Container:
    found = Container()
    pos, n = 8, len(data)
    for _ in range(MAX_CHUNKS):
        if pos + 8 > n:
            return found
        length, ctype = struct.unpack_from(">I4s", data, pos)
        if length > n - pos - 12:
            return found
        body = data[pos + 8 : pos + 8 + length]
        if ctype in (b"tEXt", b"iTXt", b"zTXt"):
            keyword, text = _png_text(found, ctype, body)
            if keyword == "XML:com.adobe.xmp":
                found.xmp = text
            elif keyword:
                _keep(found, keyword, text)
        elif ctype == b"eXIf":
            found.exif = body
        elif ctype == b"caBX":
            found.c2pa = True
        elif ctype == b"IEND":
            return found
        pos += 12 + length
    found.partial = True
    return found


def _png_text(found: Container, ctype: bytes, body: bytes) -> tuple[str, str | None]:
    keyword, _, rest = body.partition(b"\x00")
    key = keyword[:80].decode("latin-1")  # the PNG spec's keyword limit
    if ctype == b"tEXt":
        return key, found.take_text(rest, "latin-1")
    if ctype == b"zTXt":
        return key, found.inflate(rest[1:])
    compressed, _method = rest[:1] == b"\x01", rest[1:2]
    _lang, _, rest = rest[2:].partition(b"\x00")
    _translated, _, text = rest.partition(b"\x00")
    return key, found.inflate(text) if compressed else found.take_text(text)


def _walk_webp(data: bytes) -> Container:
    found = Container()
    pos, n = 12, len(data)
    for _ in range(MAX_CHUNKS):
        if pos + 8 > n:
            return found
        ctype, length = struct.unpack_from("<4sI", data, pos)
        if length > n - pos - 8:
            return found
        body = data[pos + 8 : pos + 8 + length]
        if ctype == b"EXIF":
            found.exif = body[6:] if body.startswith(b"Exif\x00\x00") else body
        elif ctype == b"XMP ":
            found.xmp = found.take_text(body)
        elif ctype == b"C2PA":
            found.c2pa = True
        pos += 8 + length + (length & 1)
    found.partial = True
    return found


# ---- EXIF (IFD0 ASCII tags only) ------------------------------------------------------------

EXIF_TEXT_TAGS = {0x0131: "Software", 0x013B: "Artist", 0x010E: "ImageDescription", 0x010F: "Make"}


def exif_text(exif: bytes) -> dict[str, str]:
    """The few IFD0 text tags that name software; bounds-checked, never raises."""
    out: dict[str, str] = {}
    try:
        order = {b"II": "<", b"MM": ">"}[exif[:2]]
        (ifd,) = struct.unpack_from(order + "I", exif, 4)
        (count,) = struct.unpack_from(order + "H", exif, ifd)
        for i in range(min(count, 512)):
            tag, typ, num, value = struct.unpack_from(order + "HHI4s", exif, ifd + 2 + 12 * i)
            if tag not in EXIF_TEXT_TAGS or typ != 2:
                continue
            if num <= 4:
                raw = value[:num]
            else:
                (offset,) = struct.unpack(order + "I", value)
                raw = exif[offset : offset + min(num, 4096)]
            out[EXIF_TEXT_TAGS[tag]] = raw.split(b"\x00")[0].decode("utf-8", "replace").strip()
    except (KeyError, struct.error):
        pass
    return out


# ---- evidence ------------------------------------------------------------------------------

_DST = re.compile(r"DigitalSourceType(?:\s*=\s*[\"']|>)\s*([^\"'<\s]+)", re.I)
_CREATOR = re.compile(r"CreatorTool(?:\s*=\s*[\"']|>)\s*([^\"'<]+)", re.I)


def generator_in(text: str | None) -> str | None:
    if not text:
        return None
    for pattern, name in GENERATORS:
        if pattern.search(text):
            return name
    return None


def metadata_evidence(found: Container, xmp_codes: list[str]) -> list[Evidence]:
    """Evidence from XMP (its IPTC source types already read: `xmp_source_types`), text chunks
    and EXIF (everything but C2PA)."""
    evidence = []
    creator = _CREATOR.search((found.xmp or "")[:XMP_MAX])
    tool = generator_in(creator.group(1)) if creator else None
    for code in xmp_codes:
        if code == IPTC_AI:
            evidence.append(Evidence("iptc-digital-source-type", tool, True))
        elif code in IPTC_AI_EDITED:
            evidence.append(Evidence("iptc-digital-source-type", tool, False))
    if "parameters" in found.texts:
        evidence.append(Evidence("sd-parameters", "Stable Diffusion", True))
    if "prompt" in found.texts or "workflow" in found.texts:
        evidence.append(Evidence("comfyui", "ComfyUI", True))
    if found.exif:
        tags = exif_text(found.exif)
        name = generator_in(tags.get("Software")) or generator_in(tags.get("Artist"))
        name = name or generator_in(tags.get("ImageDescription"))
        if name:
            evidence.append(Evidence("exif-software", name, True))
    if tool:
        evidence.append(Evidence("xmp-creator-tool", tool, True))
    return evidence


MIME = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


def c2pa_evidence(data: bytes, fmt: str | None, trust_pem: str | None = None) -> tuple[Evidence, str, list[str]]:
    """Read and validate the manifest; returns the evidence, the validation state and the IPTC
    source types its actions declare.

    AI: a valid (or trusted) manifest whose actions declare `trainedAlgorithmicMedia` decides "ai".
    Real: only a *trusted* one (signed under --c2pa-trust) whose `c2pa.created` action declares a
    capture (`digitalCapture`, `computationalCapture`) and no action a generative type decides
    "real"; a merely valid one is reported, since anyone can sign a manifest."""
    try:
        import c2pa

        context = None
        if trust_pem:
            context = c2pa.Context.from_dict({"trust": {"trust_anchors": trust_pem}, "verify": {"verify_trust": True}})
        with c2pa.Reader(MIME.get(fmt or "", "image/jpeg"), io.BytesIO(data), context=context) as reader:
            state = (reader.get_validation_state() or "invalid").lower()
            store = json.loads(reader.json())
    except Exception:  # a manifest the library cannot even parse is as untrustworthy as a failed one
        return Evidence("c2pa", None, False), "invalid", []
    manifest = store.get("manifests", {}).get(store.get("active_manifest", ""), {})
    generator = _claim_generator(manifest)
    actions = _actions(manifest)
    codes = [str(a.get("digitalSourceType", "")).rsplit("/", 1)[-1] for a in actions]
    if state in ("valid", "trusted") and IPTC_AI in codes:
        return Evidence("c2pa", generator, True), state, codes
    created = {
        str(a.get("digitalSourceType", "")).rsplit("/", 1)[-1] for a in actions if a.get("action") == "c2pa.created"
    }
    capture = state == "trusted" and created & IPTC_CAPTURE and not IPTC_GENERATIVE & set(codes)
    return Evidence("c2pa", generator, bool(capture), "real" if capture else "ai"), state, codes


def _actions(manifest: dict) -> list[dict]:
    out = []
    for assertion in manifest.get("assertions", []):
        if str(assertion.get("label", "")).startswith("c2pa.actions"):
            out += assertion.get("data", {}).get("actions", [])
    return out


def _claim_generator(manifest: dict) -> str | None:
    for action in _actions(manifest):
        agent = action.get("softwareAgent")
        name = agent.get("name") if isinstance(agent, dict) else agent
        if name:
            return generator_in(name) or str(name)
    info = manifest.get("claim_generator_info") or []
    if info and isinstance(info[0], dict) and info[0].get("name"):
        return generator_in(info[0]["name"]) or info[0]["name"]
    return generator_in(manifest.get("claim_generator"))


def inspect(data: bytes, fmt: str | None, trust_pem: str | None = None) -> Provenance:
    """The strongest evidence in an image's bytes (decisive evidence first)."""
    found = walk(data, fmt)
    codes = xmp_source_types(found.xmp)
    evidence = metadata_evidence(found, codes)
    state = None
    if found.c2pa:
        c2pa_found, state, c2pa_codes = c2pa_evidence(data, fmt, trust_pem)
        evidence.append(c2pa_found)
        codes += c2pa_codes
    source_type = next((t for t in IPTC_SOURCE_TYPES if t in codes), None)
    if not evidence:
        return Provenance(c2pa_state=state, partial=found.partial, source_type=source_type)
    best = min(evidence, key=_rank)
    generator = best.generator or next((e.generator for e in evidence if e.generator), None)
    return Provenance(best.kind, generator, state, best.decisive, best.says, found.partial, source_type=source_type)


def _rank(evidence: Evidence | Provenance) -> tuple[bool, int]:
    """Decisive evidence first, then by STRENGTH."""
    return not evidence.decisive, STRENGTH.index(evidence.kind)


def xmp_source_types(xmp: str | None) -> list[str]:
    return [m.group(1).rsplit("/", 1)[-1] for m in _DST.finditer((xmp or "")[:XMP_MAX])]


def with_watermark(found: Provenance, match) -> Provenance:
    """Add a watermark reading (`watermark.WatermarkMatch`, or None when none was taken) to the
    metadata evidence: it fills `watermark_bits`, and from the "likely" level on it is evidence of
    kind `sd-watermark`, decisive at "very likely", kept when stronger than what the metadata said."""
    if match is None:
        return found
    found = replace(found, watermark_bits=match.column)
    if match.level not in ("likely", "very likely"):
        return found
    mark = Evidence("sd-watermark", match.generator, match.decisive)
    if found.kind is not None and _rank(found) <= _rank(mark):
        return found
    return replace(found, kind=mark.kind, generator=mark.generator, decisive=mark.decisive, says=mark.says)
