"""What a model learned from, and whether an image lies inside it.

Training records the range of its images' shorter sides and their formats in the ONNX metadata
(`training.domain`). A scan then marks each row `in_domain`: the one rule, here, is that the
image's shorter side lies within a factor of two of the shortest and longest the model saw, and
its format family (JPEG, or lossless) is one it saw. Outside, the verdict still comes, but it is
the model extrapolating: the shipped model learned 32x32 JPEGs and is near chance on 12 MP photos
(its model card).
"""

from __future__ import annotations

from dataclasses import dataclass

FACTOR = 2  # how far beyond the trained sizes an image may be and still count as inside
JPEG_FORMATS = frozenset({"JPEG", "MPO"})


def format_family(fmt: str | None) -> str:
    """JPEG compression leaves traces detectors learn; everything else is compared as lossless."""
    return "JPEG" if fmt in JPEG_FORMATS else "lossless"


@dataclass(frozen=True)
class Domain:
    """The training images: their shorter sides' range and their format families."""

    short_side: tuple[int, int]
    families: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"short_side": list(self.short_side), "formats": list(self.families)}

    @classmethod
    def from_dict(cls, data: dict) -> Domain:
        low, high = (int(v) for v in data["short_side"])
        return cls((low, high), tuple(str(f) for f in data["formats"]))

    def outside(self, width: int | None, height: int | None, fmt: str | None) -> str | None:
        """None when the image is inside; else why not: "larger", "smaller" or "format"."""
        if not width or not height:
            return None
        short = min(width, height)
        if short > self.short_side[1] * FACTOR:
            return "larger"
        if short * FACTOR < self.short_side[0]:
            return "smaller"
        if format_family(fmt) not in self.families:
            return "format"
        return None

    def describe(self) -> str:
        low, high = self.short_side
        sides = f"{low} px" if low == high else f"{low}-{high} px"
        return f"{sides} on the shorter side, {' and '.join(self.families)}"

    @staticmethod
    def union(domains: list[Domain]) -> Domain:
        families = sorted({f for d in domains for f in d.families})
        return Domain((min(d.short_side[0] for d in domains), max(d.short_side[1] for d in domains)), tuple(families))


def domain_of(metadata: dict) -> Domain | None:
    """The domain a model's metadata records (an ensemble's: the union of its members'), or None."""
    recorded = metadata.get("training", {}).get("domain")
    if recorded:
        return Domain.from_dict(recorded)
    members = [m.get("training", {}).get("data", {}).get("domain") for m in metadata.get("members", [])]
    if members and all(members):
        return Domain.union([Domain.from_dict(m) for m in members])
    return None


def survey(paths: list[str], limit: int = 5000) -> Domain | None:
    """The domain of a set of training images, from their headers (an evenly spaced sample of at
    most `limit` of them: header reads cost ~50 us each)."""
    from PIL import Image

    step = max(1, len(paths) // limit)
    shorts, families = [], set()
    for path in paths[::step]:
        try:
            with Image.open(path) as image:
                shorts.append(min(image.size))
                families.add(format_family(image.format))
        except Exception:  # unreadable files are reported by training's own decode
            continue
    if not shorts:
        return None
    return Domain((min(shorts), max(shorts)), tuple(sorted(families)))
