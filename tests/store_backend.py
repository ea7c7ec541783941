"""A storage backend as the conformance suite (test_store_backends.py) sees it: where a test
class's stores go, raw access to their objects by key (to truncate, replace or delete one as a
failing disk or a careless user would), and one complete store per encoding written there once.
"""

from __future__ import annotations

import uuid
from typing import Any

import fsspec
from synthetic import write_synthetic


class Backend:
    """Where a test class's stores live, raw access to their objects by key, and one complete
    store per encoding written there once (`written`), which tests read or copy (`copy`)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._written: dict[str, str] = {}

    def url(self, name: str) -> str:
        """A new, empty place for a store called `name` (unique per call)."""
        return f"{self.root}/{uuid.uuid4().hex[:12]}/{name}"

    def written(self, encoding: str = "topk") -> str:
        """A complete store of `encoding`, written on this backend once (tests only read it)."""
        if encoding not in self._written:
            self._written[encoding] = url = self.url("s.zarr")
            write_synthetic(url, encoding)
        return self._written[encoding]

    def copy(self, encoding: str = "topk", target: str | None = None) -> str:
        """A copy of `written(encoding)`, object for object, for a test to damage (at `target`,
        or a new place)."""
        fs, path = self._path(self.written(encoding), "")
        target = target or self.url("s.zarr")
        fs.copy(path, self._path(target, "")[1], recursive=True)
        return target

    def _path(self, url: str, key: str) -> tuple[Any, str]:
        fs, path = fsspec.core.url_to_fs(url)
        fs.invalidate_cache()  # object-store listings are cached; another client changed them
        return fs, f"{path.rstrip('/')}/{key}".rstrip("/")

    def read(self, url: str, key: str) -> bytes:
        fs, path = self._path(url, key)
        data: bytes = fs.cat_file(path)
        return data

    def write(self, url: str, key: str, data: bytes) -> None:
        fs, path = self._path(url, key)
        fs.pipe_file(path, data)

    def delete(self, url: str, key: str = "") -> None:
        """Delete the object `key`, or everything under it (the whole store for "")."""
        fs, path = self._path(url, key)
        fs.rm(path, recursive=True)
        fs.invalidate_cache()

    def keys(self, url: str, prefix: str = "") -> list[str]:
        """Keys of the store's objects under `prefix`, relative to the store, sorted."""
        fs, path = self._path(url, prefix)
        base = self._path(url, "")[1]
        if not fs.exists(path):
            return []
        return sorted(p[len(base) + 1 :] for p in fs.find(path) if p != base)


def done_flags(backend: Backend, url: str) -> set[str]:
    """`corpus/unit` of every done record object of a store."""
    return {
        f"{key.split('/')[1]}/{key.rsplit('/', 1)[1]}"
        for key in backend.keys(url, "corpora")
        if "/done/c/" in key
    }
