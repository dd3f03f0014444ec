"""The `aidetect` command line: one module per command group (scan, evaluate, report; training in
train/cli.py), shared options in options.py, exit codes in guard.py, the app in app.py. No work
happens here; `main` imports the app only when the command runs."""


def main() -> None:
    from aidetect.cli.app import main as run

    run()
