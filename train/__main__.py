"""`python -m train DATA ...` is the same as `aidetect train DATA ...`."""

import typer

from train.cli import train

if __name__ == "__main__":
    typer.run(train)
