"""Where rows come from and go: sources (folder walk, S3 listing), part stores (local, S3), the
Parquet sink and its resume index, and the one atomic file write."""
