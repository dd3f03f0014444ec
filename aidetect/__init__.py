"""aidetect: a high-throughput batch scanner that tells AI-generated images from real ones."""

__version__ = "0.1.0"
