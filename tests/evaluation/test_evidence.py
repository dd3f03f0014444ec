"""The evidence summary eval and the report share: per kind, verdicts decided and model agreement."""

from __future__ import annotations

import pandas as pd

from aidetect.evaluation.evidence import agreement_text, evidence_summary


def test_evidence_summary_counts_decisions_and_agreement():
    rows = pd.DataFrame(
        {
            "provenance": ["sd-watermark", "sd-watermark", "c2pa", "c2pa", "exif-software", None],
            "label": ["ai", "real", "real", None, "ai", "real"],
            "verdict": ["ai", "ai", "real", "real", "ai", "real"],
            "verdict_source": ["provenance", "provenance", "provenance", "provenance", "model", "model"],
        }
    )
    summary = {e["kind"]: e for e in evidence_summary(rows)}
    assert set(summary) == {"sd-watermark", "c2pa"}  # exif-software did not decide here
    assert summary["sd-watermark"] | {} == {
        "kind": "sd-watermark",
        "decided": 2,
        "said_ai": 2,
        "said_real": 0,
        "model_agreed": 1,
        "model_labelled": 2,
    }
    assert (summary["c2pa"]["said_real"], summary["c2pa"]["model_agreed"], summary["c2pa"]["model_labelled"]) == (
        2,
        1,
        1,
    )
    assert agreement_text(summary["sd-watermark"]) == "the model agreed on 1 of 2 (50%)"
    assert evidence_summary(rows.assign(verdict_source="model")) == []
