"""S3 (and S3-compatible stores: MinIO, Ceph, R2): listing, reading objects, and a part store.

Configuration follows the AWS conventions: the default credential chain, AWS_PROFILE,
AWS_REGION, and AWS_ENDPOINT_URL (or `--endpoint-url`). boto3 is used rather than DALI's own
s3:// reader because every object must become exactly one row, with its own error reason,
and resume needs each object's ETag, size and last-modified time from the listing.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from aidetect.errors import ObjectError, S3Error
from aidetect.io.sources import WalkStats, is_image_name, open_local
from aidetect.records import ImageRef

_local = threading.local()
# Credentials handed to this process by a Ray driver (None: boto3's default chain). Set once per
# worker process before any client exists; a global because boto3 clients are per thread.
_credentials: Credentials | None = None


@dataclass(frozen=True)
class Credentials:
    """Resolved AWS credentials, sent to Ray workers as an actor argument (never through
    runtime_env, which Ray logs). Their repr hides them, so no log or traceback shows them."""

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)

    def boto_kwargs(self) -> dict:
        return {
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "aws_session_token": self.token,
        }

    def pyarrow_kwargs(self) -> dict:
        kwargs = {"access_key": self.access_key, "secret_key": self.secret_key}
        return {**kwargs, "session_token": self.token} if self.token else kwargs


def resolve_credentials() -> Credentials | None:
    """The driver's credentials from boto3's default chain (profile, environment, instance role)."""
    import boto3

    found = boto3.session.Session().get_credentials()
    if found is None:
        return None
    frozen = found.get_frozen_credentials()
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token)


def use_credentials(credentials: Credentials) -> None:
    global _credentials
    _credentials = credentials


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_uri(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, prefix


def configure(endpoint_url: str | None) -> None:
    """`--endpoint-url` wins over AWS_ENDPOINT_URL. Set in the environment on purpose: boto3,
    pyarrow's S3 filesystem (Ray's writer) and Ray's workers (runtime_env) all read that one
    variable, so this is the one place that makes the option reach all three."""
    if endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = endpoint_url


def client():
    """One client per thread (boto3 clients are thread-safe, their creation is not)."""
    if getattr(_local, "client", None) is None:
        import boto3
        from botocore.config import Config

        config = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32)
        kwargs = _credentials.boto_kwargs() if _credentials else {}
        _local.client = boto3.session.Session().client("s3", config=config, **kwargs)
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


def list_images(
    uri: str, recursive: bool = True, stats: WalkStats | None = None, wanted: Callable[[str], bool] = is_image_name
) -> Iterator[ImageRef]:
    """Stream image objects (or those whose names are `wanted`) under a prefix, 1,000 keys a page."""
    stats = stats if stats is not None else WalkStats()
    bucket, prefix = split_uri(uri)
    kwargs = {"Bucket": bucket, "Prefix": prefix}
    if not recursive:
        kwargs["Delimiter"] = "/"
    for page in client().get_paginator("list_objects_v2").paginate(**kwargs):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.endswith("/") or not wanted(key):
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


def arrow_path(uri: str, credentials: Credentials | None = None):
    """(path, pyarrow filesystem) for a URI: the S3 filesystem with the endpoint and region the
    environment names (None for local paths). `credentials` default to this process's (a Ray
    worker's), else pyarrow's own default chain."""
    if not is_s3(uri):
        return uri, None
    import pyarrow.fs as pafs

    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    kwargs = {"region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    credentials = credentials or _credentials
    if credentials is not None:
        kwargs.update(credentials.pyarrow_kwargs())
    return uri[len("s3://") :], pafs.S3FileSystem(**kwargs)


def open_stored(ref: ImageRef):
    """A local file's or an S3 object's bytes as a stream (a context manager)."""
    return open_object(ref) if is_s3(ref.path) else open_local(ref)


@contextlib.contextmanager
def open_object(ref: ImageRef) -> Iterator:
    """An object's body as a stream, so the reader takes its header before the rest."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_uri(ref.path)
    try:
        body = client().get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as exc:
        code = _error_code(exc)
        if code in ("NoSuchKey", "404", "NotFound"):
            raise ObjectError("object not found") from None
        if code in ("AccessDenied", "403"):
            raise ObjectError("access denied") from None
        raise ObjectError(f"S3 error: {code or exc}") from None
    except BotoCoreError as exc:
        raise ObjectError(f"S3 error: {exc}") from None
    try:
        yield _ReadErrors(body)
    finally:
        body.close()


class _ReadErrors:
    """A body whose network failures mid-read are OSErrors (error rows), like a local file's."""

    def __init__(self, body) -> None:
        self.body = body

    def read(self, size: int = -1) -> bytes:
        from botocore.exceptions import BotoCoreError

        try:
            return self.body.read(size if size >= 0 else None)
        except (BotoCoreError, OSError) as exc:
            raise ObjectError(f"S3 error: {type(exc).__name__}") from None


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

    def check_location(self) -> None:
        check_bucket(self.uri)

    # A lock object with a lease: S3 has no locks, so a scan writes `_aidetect.lock` (only if
    # absent, with a conditional PUT where the store supports it) and renews it every minute.
    # A second scan refuses while the lease is fresh; a killed scan's lock expires after
    # LEASE_S. Two scans starting in the same instant are kept apart only by stores that honour
    # conditional writes (AWS S3, MinIO).
    LOCK = "_aidetect.lock"  # sink.S3_LOCK
    LEASE_S = 300
    RENEW_S = 60

    def lock(self) -> None:
        held = self._read_lock()
        if held and held.get("expires", 0) > time.time():
            raise S3Error(
                f"{self.uri} is being written by another scan, pid {held.get('pid', '?')} on {held.get('host', '?')}; "
                f"wait for it or choose another -o (a killed scan's lock expires {self.LEASE_S // 60} minutes after it stopped)"
            )
        if held:
            self.delete(self.LOCK)
        self._owner = {"pid": os.getpid(), "host": socket.gethostname(), "token": os.urandom(8).hex()}
        try:
            client().put_object(Bucket=self.bucket, Key=self.prefix + self.LOCK, Body=self._lease(), IfNoneMatch="*")
        except Exception as exc:
            if _error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise S3Error(f"{self.uri} is being written by another scan (it took the lock first)") from None
            raise S3Error(f"cannot write to {self.uri}: {_error_code(exc) or exc}") from None
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="s3-lock", daemon=True)
        self._renewer.start()

    def _lease(self) -> bytes:
        return json.dumps({**self._owner, "expires": time.time() + self.LEASE_S}).encode()

    def _read_lock(self) -> dict | None:
        try:
            return json.loads(self.get(self.LOCK))
        except Exception as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            return {"expires": 0}  # unreadable: treat as stale

    def _renew(self) -> None:
        while not self._stop.wait(self.RENEW_S):
            try:
                self.put(self.LOCK, self._lease())
            except Exception:
                pass  # the next renewal tries again; the lease covers five missed ones

    def unlock(self) -> None:
        if getattr(self, "_renewer", None) is None:
            return
        self._stop.set()
        self._renewer = None
        held = self._read_lock()
        if held and held.get("token") == self._owner["token"]:
            self.delete(self.LOCK)
