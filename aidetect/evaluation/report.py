"""`aidetect report`: one self-contained HTML page to look through a scan.

Thumbnails are embedded (base64 JPEG), so the file opens offline. Every section is sorted and
capped, and the page says when it shows a sample, so a million-row scan still opens at once.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io

import numpy as np
import pandas as pd

from aidetect.evaluation.evidence import agreement_text, evidence_summary
from aidetect.io.s3 import is_s3
from aidetect.io.sink import ParquetSink
from aidetect.records import ImageRef

CAP = 48  # thumbnails per section
ERROR_ROWS = 200
THUMB = 160

COLUMNS = [
    "path",
    "label",
    "prob_ai",
    "prob_spread",
    "error",
    "width",
    "height",
    "model",
    "provenance",
    "generator",
    "c2pa_state",
    "verdict",
    "verdict_source",
    "watermark_bits",
    "source_type",
]


def load_rows(output: str) -> pd.DataFrame:
    """The columns the page needs, from a scan's dataset folder, single Parquet file or s3:// prefix."""
    import os

    import pyarrow.parquet as pq

    from aidetect.errors import OutputError

    if os.path.isfile(output):
        table = pq.read_table(output)
    elif is_s3(output) or os.path.isdir(output):
        table = ParquetSink(output, "").read_all()
    else:
        raise OutputError(f"{output}: no scan output there (run `aidetect scan ... -o {output}` first)")
    if not len(table):
        raise OutputError(f"{output}: the scan output has no rows")
    return table.select([c for c in COLUMNS if c in table.column_names]).to_pandas()


def thumbnail(path: str) -> str | None:
    """A small base64 JPEG data URI of the image, or None when it cannot be read."""
    from aidetect.io.sources import path_from_display
    from aidetect.pipeline.preprocess import open_rgb
    from aidetect.pipeline.worker import read_ref

    try:
        data = read_ref(ImageRef(path if is_s3(path) else path_from_display(path), path, None, None))
        image = open_rgb(data)
        image.draft("RGB", (THUMB, THUMB))
        image.thumbnail((THUMB, THUMB))
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    except Exception:
        return None


def histogram_png(probs: np.ndarray, threshold: float) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.6), dpi=110)
    ax.hist(probs, bins=np.linspace(0, 1, 51), color="#4c72b0")
    ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.2f}")
    ax.set_xlabel("prob_ai")
    ax.set_ylabel("images")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _card(row: pd.Series, caption: str) -> str:
    src = thumbnail(row.path)
    img = f'<img src="{src}" alt="">' if src else '<div class="missing">not readable</div>'
    name = html.escape(str(row.path))
    return (
        f'<figure title="{name}">{img}<figcaption>{caption}<br><span class="path">{name}</span></figcaption></figure>'
    )


def _prob(row: pd.Series) -> str:
    return "" if pd.isna(row.prob_ai) else f"prob_ai {row.prob_ai:.3f}"


def _gallery(title: str, rows: pd.DataFrame, total: int, caption, note: str = "") -> str:
    shown = f"showing {len(rows)} of {total}" if total > len(rows) else f"{total} images"
    cards = "".join(_card(r, caption(r)) for r in rows.itertuples(index=False))
    body = cards or '<p class="empty">none</p>'
    return f'<section><h2>{title} <small>({shown}{note})</small></h2><div class="grid">{body}</div></section>'


def scan_threshold(rows: pd.DataFrame) -> float:
    """The threshold the scan used, read back from its labels: above the highest prob_ai
    labelled real and at most the lowest labelled ai (the tighter side: with --tta, images near
    the threshold are mostly "uncertain"); 0.5 when one side is missing."""
    real, ai = rows.prob_ai[rows.label == "real"], rows.prob_ai[rows.label == "ai"]
    if real.empty or ai.empty or real.max() >= ai.min():
        return 0.5
    return float(ai.min())


def build_report(output: str, threshold: float | None = None) -> str:
    rows = load_rows(output)
    if threshold is None:
        threshold = scan_threshold(rows)
    ok = rows[rows.error.isna()]
    counts = {
        "images": len(rows),
        "real": int((rows.label == "real").sum()),
        "ai": int((rows.label == "ai").sum()),
        "uncertain": int((rows.label == "uncertain").sum()),
        "errors": int(rows.error.notna().sum()),
        "decided by provenance": int((rows.verdict_source == "provenance").sum()),
    }
    stats = "".join(f'<div class="stat"><b>{n:,}</b><span>{k}</span></div>' for k, n in counts.items())
    models = ", ".join(html.escape(m) for m in rows.model.dropna().unique()[:5])
    likely = ok[ok.label != "uncertain"].sort_values("prob_ai", ascending=False)
    uncertain = ok[ok.label == "uncertain"]
    note = ""
    if "prob_spread" in ok and len(uncertain):
        uncertain = uncertain.sort_values("prob_spread", ascending=False)
    else:  # without --tta, the closest calls are the ones nearest the threshold
        uncertain = ok.assign(distance=(ok.prob_ai - threshold).abs()).sort_values("distance")
        note = "; no --tta run: the closest calls to the threshold"
    proven = rows[rows.provenance.notna()] if "provenance" in rows else rows.iloc[:0]
    errors = rows[rows.error.notna()]
    error_rows = "".join(
        f"<tr><td>{html.escape(str(p))}</td><td>{html.escape(str(e))}</td></tr>"
        for p, e in zip(errors.path[:ERROR_ROWS], errors.error[:ERROR_ROWS])
    )
    reasons = errors.error.str.replace(r":.*", "", regex=True).value_counts().head(10)
    reason_list = "".join(f"<li>{html.escape(r)}: {n}</li>" for r, n in reasons.items())
    sections = [
        _gallery("Most likely AI-generated", likely.head(CAP), len(likely), _prob),
        _gallery(
            "Uncertain",
            uncertain.head(CAP),
            len(uncertain),
            lambda r: (
                _prob(r)
                + (f", spread {r.prob_spread:.2f}" if "prob_spread" in ok and not pd.isna(r.prob_spread) else "")
            ),
            note,
        ),
        _evidence_section(rows),
        _gallery(
            "Provenance findings",
            proven.head(CAP),
            len(proven),
            lambda r: html.escape(
                f"{r.provenance}: {r.generator or '?'}"
                + (f" (C2PA {r.c2pa_state})" if isinstance(r.c2pa_state, str) else "")
            ),
        ),
        f"<section><h2>Errors <small>({len(errors)} files{'; first ' + str(ERROR_ROWS) if len(errors) > ERROR_ROWS else ''})</small></h2>"
        f"<ul>{reason_list}</ul><table><tr><th>path</th><th>reason</th></tr>{error_rows}</table></section>",
    ]
    hist = histogram_png(ok.prob_ai.to_numpy(), threshold) if len(ok) else ""
    return TEMPLATE.format(
        title=html.escape(f"aidetect report: {output}"),
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        models=models,
        stats=stats,
        histogram=f'<img class="hist" src="{hist}" alt="prob_ai histogram">' if hist else "",
        sections="".join(sections),
    )


def _evidence_section(rows: pd.DataFrame) -> str:
    """Which evidence decided how many verdicts, and how often the model agreed with it."""
    entries = evidence_summary(rows)
    if not entries:
        return ""
    body = "".join(
        f"<tr><td>{html.escape(e['kind'])}</td><td>{e['decided']:,}</td><td>{e['said_ai']:,}</td>"
        f"<td>{e['said_real']:,}</td><td>{html.escape(agreement_text(e))}</td></tr>"
        for e in entries
    )
    return (
        "<section><h2>Evidence that decided</h2><table><tr><th>evidence</th><th>decided</th><th>ai</th>"
        f"<th>real</th><th>model</th></tr>{body}</table></section>"
    )


def write_report(output: str, report_path: str, threshold: float | None = None) -> str:
    page = build_report(output, threshold)
    with open(report_path, "w", encoding="utf-8") as f:
        f.write(page)
    return report_path


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }} h2 {{ font-size: 17px; margin: 28px 0 8px; }}
small, .meta {{ color: #666; font-weight: normal; }}
.stats {{ display: flex; gap: 12px; flex-wrap: wrap; margin: 16px 0; }}
.stat {{ background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 90px; }}
.stat b {{ display: block; font-size: 20px; }} .stat span {{ color: #666; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 10px; }}
figure {{ margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 6px; }}
figure img {{ width: 100%; height: 150px; object-fit: contain; background: #eee; image-rendering: pixelated; }}
figcaption {{ font-size: 12px; }} .path {{ color: #777; word-break: break-all; font-size: 11px; }}
.missing {{ height: 150px; display: flex; align-items: center; justify-content: center; background: #eee; color: #999; }}
table {{ border-collapse: collapse; background: #fff; }} td, th {{ border: 1px solid #ddd; padding: 3px 8px; text-align: left; font-size: 12px; }}
.hist {{ max-width: 100%; background: #fff; border: 1px solid #ddd; border-radius: 6px; }}
.empty {{ color: #999; }}
</style></head><body>
<h1>{title}</h1>
<div class="meta">generated {generated} · model {models} · sections are sorted and capped; the counts are for all rows</div>
<div class="stats">{stats}</div>
<h2>prob_ai over all decoded images</h2>{histogram}
{sections}
</body></html>
"""
