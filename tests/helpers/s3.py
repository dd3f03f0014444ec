"""The test bucket the `bucket` fixture fills (tests/conftest.py)."""

BUCKET = "photos"
N_NESTED = 1005  # more than one listing page (1,000 keys)
