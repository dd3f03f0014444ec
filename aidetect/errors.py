"""Every exception aidetect raises, in one dependency-free module.

`UsageError` subclasses are the user's to fix: the CLI prints them as one line and exits 2
(cli/guard.py). The `OSError` subclasses are per-file read failures that become a row's `error`.
"""

from __future__ import annotations


class UsageError(RuntimeError):
    """Something the user named cannot be used; one line says what, exit code 2."""


class SourceError(UsageError):
    """A SOURCE that does not exist or cannot be listed."""


class ModelError(UsageError):
    """A model file that is missing, unreadable or not a compatible aidetect detector."""


class DeviceError(UsageError):
    """The requested device cannot be used on this machine."""


class OutputError(UsageError):
    """OUTPUT cannot be used: not writable, not aidetect's, locked by another scan, or a write failed."""


class DataError(UsageError, ValueError):
    """A labelled-data folder that training or evaluation cannot use."""


class S3Error(UsageError):
    """A fatal S3 problem found before any work: missing bucket, bad credentials, no endpoint."""


class RayError(UsageError):
    """Ray is missing, or the cluster cannot run this scan."""


class ExportError(UsageError):
    """A checkpoint that cannot become an ONNX detector (or whose ONNX file disagrees with it)."""


class NotRegularFile(OSError):
    """A FIFO, device or socket named like an image: refused, never read."""


class ObjectError(OSError):
    """One object could not be read; its message is the row's error."""


class TruncatedJPEG(ValueError):
    """libjpeg-turbo reached the end of the data before the image was complete."""
