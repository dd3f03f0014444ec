"""How many images each kind of provenance evidence decided, and how often the model agreed:
the same figures in `aidetect eval` (metrics.json, the table) and in the HTML report."""

from __future__ import annotations

import pandas as pd


def evidence_summary(rows: pd.DataFrame) -> list[dict]:
    """One entry per evidence kind that decided at least one verdict, most frequent first."""
    if "verdict_source" not in rows:
        return []
    decided = rows[rows.verdict_source == "provenance"]
    out = []
    for kind, group in decided.groupby("provenance", dropna=False):
        with_model = group[group.label.isin(["ai", "real"])]
        out.append(
            {
                "kind": str(kind),
                "decided": len(group),
                "said_ai": int((group.verdict == "ai").sum()),
                "said_real": int((group.verdict == "real").sum()),
                "model_agreed": int((with_model.label == with_model.verdict).sum()),
                "model_labelled": len(with_model),
            }
        )
    return sorted(out, key=lambda e: -e["decided"])


def agreement_text(entry: dict) -> str:
    if not entry["model_labelled"]:
        return "no model verdict to compare"
    share = entry["model_agreed"] / entry["model_labelled"]
    return f"the model agreed on {entry['model_agreed']} of {entry['model_labelled']} ({share:.0%})"
