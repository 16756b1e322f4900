"""A local S3 server (moto) for the object-storage tests: no network, no credentials.

`s3_bucket` starts (once per session) a moto server on 127.0.0.1 at a free port, creates a fresh bucket per
test, and sets the standard AWS environment variables only inside that test, so s3fs, zarr's FsspecStore and
anything built on them talk to it exactly as they would to a real store. Without the `cluster` extra the
tests that use it skip, saying so.
"""
import logging
import uuid

import pytest

NEEDS_EXTRA = "needs the cluster extra (pip install -e '.[cluster]'): s3fs and moto"


@pytest.fixture(scope="session")
def _moto_endpoint():
    pytest.importorskip("s3fs", reason=NEEDS_EXTRA)
    server_module = pytest.importorskip("moto.server", reason=NEEDS_EXTRA)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not one log line per request
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # port 0: a free one
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def aws_env(endpoint: str) -> dict[str, str]:
    """The standard AWS variables that point s3fs (and anything on it) at the moto server at `endpoint`."""
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}


@pytest.fixture
def s3_bucket(_moto_endpoint, monkeypatch):
    """'s3://<bucket>': an empty bucket on the local moto server; AWS_* variables point at it during the test."""
    import s3fs
    for name, value in aws_env(_moto_endpoint).items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()  # instances cache their endpoint: make new ones read the variables
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(bucket)
    yield f"s3://{bucket}"
    s3fs.S3FileSystem.clear_instance_cache()


class RequestCounter:
    """Counts the S3 requests s3fs makes in this process, by operation and key (e.g. PutObject per shard)."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []  # (operation, key)

    def count(self, operation: str, prefix: str = "") -> dict[str, int]:
        out: dict[str, int] = {}
        for op, key in self.calls:
            if op == operation and key.startswith(prefix):
                out[key] = out.get(key, 0) + 1
        return out


@pytest.fixture
def s3_requests(s3_bucket, monkeypatch):
    """A RequestCounter recording every s3fs call (operation name as boto spells it: put_object, get_object...)."""
    import s3fs
    counter = RequestCounter()
    original = s3fs.S3FileSystem._call_s3

    async def counting(self, method, *args, **kwargs):
        counter.calls.append((method, kwargs.get("Key", "")))
        return await original(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counting)
    return counter
