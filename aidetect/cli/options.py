"""Options several commands take, declared once (`Annotated` types: the default stays in each signature)."""

from __future__ import annotations

from typing import Annotated

import typer


def _device(value: str) -> str:
    if value not in ("auto", "cpu", "gpu"):
        raise typer.BadParameter("must be auto, cpu or gpu")
    return value


Model = Annotated[
    str | None,
    typer.Option("--model", help="ONNX detector made by `aidetect train`/`export` (default: the bundled model)."),
]
Device = Annotated[
    str, typer.Option("--device", callback=_device, help="auto (GPU when usable), cpu, or gpu (fails if no GPU).")
]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Images per decode and inference batch.")]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads", min=1, help="CPU threads for decoding and inference together (default: all usable cores)."
    ),
]
Crops = Annotated[
    int | None,
    typer.Option(
        "--crops",
        help="Windows scored per image by a model trained with --view crop: 1 (centre), 4, 9 or 16 (a grid), "
        "or 5 (corners and centre); default: the count stored in the model. More windows see more of a large "
        "image and cost one inference each.",
    ),
]
Holdout = Annotated[
    float | None,
    typer.Option("--holdout", help="Use the validation split `aidetect train --val-split HOLDOUT` held out of DATA."),
]
Seed = Annotated[int, typer.Option("--seed", help="The training seed, with --holdout.")]
TargetFpr = Annotated[
    float,
    typer.Option(
        "--target-fpr", min=0.0, max=1.0, help="The threshold that flags at most this fraction of real images."
    ),
]
LabelledData = Annotated[
    str,
    typer.Argument(
        help="Labelled images: real/ and fake/ (or human/ and ai/) subfolders; a test/ or val/ split inside is used when present.",
        show_default=False,
    ),
]
