"""A real S3 server on loopback for the object-store tests: moto's S3 app served by werkzeug in this process.

moto's own ThreadedMotoServer serves requests on threads, and moto checks `If-None-Match` / `If-Match` and then
writes without a lock, so two racing conditional writes can both succeed there; S3 evaluates them atomically.
Served on one thread, every request (conditional ones included) is atomic, as on S3, so a lost race in these
tests is our bug and not the emulator's.
"""

from __future__ import annotations

import threading
import uuid

import pytest

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_endpoint():
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log(self, *args, **kwargs):
            pass

    server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=False,
                         request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, name="moto-s3", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture
def s3_root(s3_endpoint, tmp_path, monkeypatch):
    """A fresh bucket per test, `s3://<bucket>/store`; versions read are cached under tmp_path."""
    import s3fs

    # Per test, so no later test in the session talks to this server by accident; subprocesses (killed writers,
    # lease holders, publishers) inherit them and reach the same server.
    for k, v in {**CREDS, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(k, v)
    bucket = f"plasma-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    monkeypatch.setenv("PLASMA_STORE_CACHE", str(tmp_path / "cache"))
    return f"s3://{bucket}/store"
