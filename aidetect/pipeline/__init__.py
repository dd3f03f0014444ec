"""What happens to one batch, and nothing else: read and probe, provenance, decode, preprocess,
test-time variants, the detector, and the BatchWorker that turns references into rows."""
