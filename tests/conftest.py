"""Shared fixtures: a tiny real ONNX detector (random weights) and a real S3 server on loopback.
Helpers that tests import live in tests/helpers/."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from helpers.models import TINY_ARCH, TINY_SIZE
from helpers.s3 import BUCKET, N_NESTED


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> str:
    """A CoAtNet exported with the training module's exporter, so scans use a real ONNX file."""
    import torch

    from aidetect.pipeline.preprocess import Preprocess
    from train.export import base_metadata, export_onnx
    from train.loop import build_model

    torch.manual_seed(0)
    model = build_model(TINY_ARCH, TINY_SIZE, 2)
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    export_onnx(model, base_metadata(TINY_ARCH, 2, Preprocess(TINY_SIZE, TINY_SIZE)), str(path))
    return str(path)


# ---- a real S3 server on loopback ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1, for the whole session; stopped at the end."""
    port = _free_port()
    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
    server = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        server.kill()
        pytest.fail("moto_server did not start")
    endpoint = f"http://127.0.0.1:{port}"
    saved = {
        k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint
    )
    yield endpoint
    server.terminate()
    server.wait(timeout=10)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def bucket(s3_endpoint):
    import boto3
    from helpers.images import jpeg

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    small = jpeg(24, 24)
    for i in range(N_NESTED):
        s3.put_object(Bucket=BUCKET, Key=f"nested/{i % 7}/deeper/{i:04d}.jpg", Body=small)
    odd = {
        "odd/with space (1).jpg": jpeg(seed=1),
        "odd/ünïcødé+plus.png": jpeg(seed=2),
        "odd/corrupt.jpg": jpeg(seed=3)[:700],
        "odd/notes.txt": b"not an image",
        "odd/text.png": b"hello",
    }
    for key, body in odd.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return s3
