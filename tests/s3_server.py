"""A real S3 protocol server on loopback (moto), with a log of every request it answered.

    with s3_server() as server:          # sets AWS_* so s3fs, botocore and subprocesses use it
        url = server.bucket_url("cache.zarr")   # s3://kdcache-test-<id>/cache.zarr
        ... server.requests ...           # [Request(method, key, status, body_bytes), ...]

Moto serves S3 in memory from its own process (spawned, so its request handling never competes
with the test process for the GIL: both cores work, as with a real endpoint), one bucket per
server; the AWS_* variables point every client (this process, writer subprocesses, torchrun
ranks) at it, exactly as users point kdcache at MinIO or Ceph. The S3 application is moto's own
(`create_backend_app("s3")`, what its domain dispatcher hands every S3 request to) without the
dispatcher, which looks the service up in moto's package folders on every request.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import astuple, dataclass
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import unquote
from urllib.request import urlopen

import s3fs

LOG_PATH = "/_kdcache_test/requests"  # the log, served by the server itself (not logged)


@dataclass(frozen=True)
class Request:
    method: str
    key: str  # object key within the bucket ("" for bucket-level calls such as LIST)
    status: int
    body_bytes: int  # response body bytes sent


class RequestLog:
    """WSGI middleware recording every request and the bytes of its response body; GET
    LOG_PATH?since=N answers the entries from the N-th on as JSON. An entry is recorded before
    its response is sent, so a client that got its response finds it in the log."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app, self.requests, self._lock = app, list[Request](), threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("PATH_INFO") == LOG_PATH:
            since = int(environ.get("QUERY_STRING", "since=0").partition("=")[2] or 0)
            with self._lock:
                log = json.dumps([astuple(r) for r in self.requests[since:]]).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [log]
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


def _serve(conn: Connection, parent: Connection) -> None:
    """The server process: moto's S3 app behind the log on 127.0.0.1 at a free port (sent
    through conn), until the parent terminates it or exits (its end of `parent` closes)."""
    from moto.server import MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    def exit_with_parent() -> None:
        with suppress(EOFError):
            parent.recv()
        os._exit(0)

    threading.Thread(target=exit_with_parent, daemon=True).start()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = RequestLog(create_backend_app("s3"))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    conn.send(server.server_address[1])
    conn.close()
    server.serve_forever()


class S3Server:
    """moto's S3 on 127.0.0.1 at a free port, served by a spawned process."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        receive, send = ctx.Pipe(duplex=False)
        watched, self._alive = ctx.Pipe(duplex=False)  # the server exits when this closes
        self.process = ctx.Process(target=_serve, args=(send, watched), daemon=True)
        self.process.start()
        send.close()
        watched.close()
        if not receive.poll(120):
            self.process.kill()
            raise RuntimeError("the moto S3 server process did not start")
        self.endpoint = f"http://127.0.0.1:{receive.recv()}"
        self.bucket = f"kdcache-test-{uuid.uuid4().hex[:12]}"
        self._log: list[Request] = []

    @property
    def requests(self) -> list[Request]:
        """Every request the server answered so far, in order."""
        with urlopen(f"{self.endpoint}{LOG_PATH}?since={len(self._log)}", timeout=60) as reply:
            self._log.extend(Request(*entry) for entry in json.load(reply))
        return list(self._log)

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
        self.process.terminate()
        self.process.join(30)
        self._alive.close()


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
