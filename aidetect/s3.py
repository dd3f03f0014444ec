"""S3 (and S3-compatible stores: MinIO, Ceph, R2): listing, reading objects, and a part store.

Configuration follows the AWS conventions: the default credential chain, AWS_PROFILE,
AWS_REGION, and AWS_ENDPOINT_URL (or `--endpoint-url`). boto3 is used rather than DALI's own
s3:// reader because every object must become exactly one row, with its own error reason,
and resume needs each object's ETag, size and last-modified time from the listing.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator

from aidetect.sources import ImageRef, WalkStats, is_image_name

_local = threading.local()


class S3Error(RuntimeError):
    """A fatal S3 problem found before any work: missing bucket, bad credentials, no endpoint."""


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_uri(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, prefix


def configure(endpoint_url: str | None) -> None:
    """`--endpoint-url` wins over AWS_ENDPOINT_URL, which boto3 reads by itself."""
    if endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = endpoint_url


def client():
    """One client per thread (boto3 clients are thread-safe, their creation is not)."""
    if getattr(_local, "client", None) is None:
        import boto3
        from botocore.config import Config

        config = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32)
        _local.client = boto3.session.Session().client("s3", config=config)
    return _local.client


def _error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "") if hasattr(exc, "response") else ""


def check_bucket(uri: str) -> None:
    """Fail fast, in one line, when a bucket is missing or credentials do not work."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    bucket, _ = split_uri(uri)
    if not bucket:
        raise S3Error(f"{uri}: no bucket name")
    try:
        client().head_bucket(Bucket=bucket)
    except NoCredentialsError:
        raise S3Error(
            "no AWS credentials found (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        ) from None
    except ClientError as exc:
        code = _error_code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise S3Error(f"{uri}: bucket '{bucket}' does not exist") from None
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise S3Error(f"{uri}: access denied to bucket '{bucket}' (check the credentials)") from None
        raise S3Error(f"{uri}: S3 error {code or exc}") from None
    except BotoCoreError as exc:
        raise S3Error(f"{uri}: cannot reach S3 ({exc})") from None


def list_images(uri: str, recursive: bool = True, stats: WalkStats | None = None) -> Iterator[ImageRef]:
    """Stream image objects under a prefix, page by page (1,000 keys a page)."""
    stats = stats if stats is not None else WalkStats()
    bucket, prefix = split_uri(uri)
    kwargs = {"Bucket": bucket, "Prefix": prefix}
    if not recursive:
        kwargs["Delimiter"] = "/"
    for page in client().get_paginator("list_objects_v2").paginate(**kwargs):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.endswith("/") or not is_image_name(key):
                stats.ignored += not key.endswith("/")
                continue
            stats.listed += 1
            modified = obj["LastModified"]
            yield ImageRef(
                path=f"s3://{bucket}/{key}",
                key=f"s3://{bucket}/{key}",
                size=int(obj["Size"]),
                mtime_ns=int(modified.timestamp()) * 1_000_000_000 + modified.microsecond * 1000,
                etag=obj.get("ETag", "").strip('"') or None,
            )


class ObjectError(OSError):
    """One object could not be read; its message is the row's error."""


def read_object(uri: str) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_uri(uri)
    try:
        return client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        code = _error_code(exc)
        if code in ("NoSuchKey", "404", "NotFound"):
            raise ObjectError("object not found") from None
        if code in ("AccessDenied", "403"):
            raise ObjectError("access denied") from None
        raise ObjectError(f"S3 error: {code or exc}") from None
    except BotoCoreError as exc:
        raise ObjectError(f"S3 error: {exc}") from None


class S3PartStore:
    """Parquet parts as objects under a prefix; one PUT is atomic, so each part appears whole."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.bucket, prefix = split_uri(self.uri)
        self.prefix = prefix + "/" if prefix else ""

    def names(self) -> list[str]:
        out = []
        for page in client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            out += [obj["Key"][len(self.prefix) :] for obj in page.get("Contents", [])]
        return sorted(n for n in out if "/" not in n)

    def put(self, name: str, data: bytes) -> None:
        client().put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data)

    def get(self, name: str) -> bytes:
        return client().get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()

    def delete(self, name: str) -> None:
        client().delete_object(Bucket=self.bucket, Key=self.prefix + name)

    def check_writable(self) -> None:
        check_bucket(self.uri)
        probe = ".write-test"
        try:
            self.put(probe, b"")
            self.delete(probe)
        except Exception as exc:
            raise S3Error(f"cannot write to {self.uri}: {_error_code(exc) or exc}") from None

    def remove_all(self) -> None:
        for name in self.names():
            self.delete(name)

    def open_for_read(self, name: str) -> io.BytesIO:
        return io.BytesIO(self.get(name))
