"""A real S3 protocol server on loopback (moto), with a log of every request it answered.

    with s3_server() as server:          # sets AWS_* so s3fs, botocore and subprocesses use it
        url = server.bucket_url("cache.zarr")   # s3://kdcache-test-<id>/cache.zarr
        ... server.requests ...           # [Request(method, key, status, body_bytes), ...]

Moto serves S3 in memory (its state is per process, so each server gets its own bucket); the
AWS_* variables point every client (this process, writer subprocesses, torchrun ranks) at it,
exactly as users point kdcache at MinIO or Ceph.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import s3fs
from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server


@dataclass(frozen=True)
class Request:
    method: str
    key: str  # object key within the bucket ("" for bucket-level calls such as LIST)
    status: int
    body_bytes: int  # response body bytes sent


class RequestLog:
    """WSGI middleware recording every request and the bytes of its response body."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app, self.requests, self._lock = app, list[Request](), threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        status: list[int] = []

        def start(code: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            status.append(int(code.split()[0]))
            return start_response(code, headers, *exc)

        body = list(self.app(environ, start))
        path = unquote(environ.get("PATH_INFO", "")).lstrip("/")
        key = path.partition("/")[2]
        with self._lock:
            self.requests.append(
                Request(environ["REQUEST_METHOD"], key, status[0], sum(map(len, body)))
            )
        return body


class S3Server:
    """moto's S3 on 127.0.0.1 at a free port, served from a daemon thread."""

    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.log = RequestLog(DomainDispatcherApplication(create_backend_app))
        self.server = make_server(
            "127.0.0.1", 0, self.log, threaded=True, request_handler=MotoRequestHandler
        )
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.bucket = f"kdcache-test-{uuid.uuid4().hex[:12]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> list[Request]:
        return self.log.requests

    def env(self) -> dict[str, str]:
        """What a user exports to reach this endpoint (botocore and s3fs read these)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def bucket_url(self, name: str) -> str:
        return f"s3://{self.bucket}/{name}"

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join()


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """Start the server, create the bucket, export AWS_* (restored afterwards)."""
    server = S3Server()
    saved = {key: os.environ.get(key) for key in server.env()}
    os.environ.update(server.env())
    s3fs.S3FileSystem.clear_instance_cache()  # cached clients would keep an old endpoint
    try:
        s3fs.S3FileSystem().mkdir(server.bucket)
        yield server
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
