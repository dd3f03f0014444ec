"""`python -m aidetect` is the same as the `aidetect` command."""

from aidetect.cli import main

if __name__ == "__main__":
    main()
