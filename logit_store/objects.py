"""The raw objects behind a store: create-once records and the manifest of a unit's objects.

* `create_once(url, key, data)` writes an object only if none exists, atomically: a hard link of
  a finished temporary file on local disk, ``If-None-Match: *`` on S3 (s3fs ``mode="create"``).
  Exactly one of several racing writers wins; the others read the winner's object.
* `object_names(url, prefix)` lists the objects directly in a store's root by name prefix (the
  root's per-corpus records, `arrays.corpus_record_key`).
* `manifest(...)` reads back the objects a unit just wrote and records each one's key, size and
  crc32, which the unit's done record keeps; `object_sizes` re-reads only the sizes (one
  concurrent round of requests), enough to detect a truncated, emptied or deleted object before
  decoding it as fill values; `verify` compares the checksums too.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import zlib
from collections.abc import Sequence
from typing import Any

import fsspec
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from logit_store.storage_options import fsspec_options, protocol

ObjectRef = tuple[str, zarr.Array, tuple[int, ...]]  # (array name, array, chunk coordinates)
CREATE_ONCE_PREFIX = ".create-once-"  # the temporary file a local create-once links from


def create_once(url: str, key: str, data: bytes, storage_options: dict[str, Any] | None) -> bool:
    """Write url/key unless it exists; True when this call created it."""
    if protocol(url) is None:
        path = os.path.join(url, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=CREATE_ONCE_PREFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.link(tmp, path)  # atomic; fails when the object exists
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
    fs, path = fsspec.core.url_to_fs(url, **fsspec_options(url, storage_options))
    target = f"{path.rstrip('/')}/{key}"
    try:
        fs.pipe_file(target, data, mode="create")
        return True
    except FileExistsError:
        return False
    except OSError as err:  # S3 answers 412 Precondition Failed when the object exists
        if "PreconditionFailed" in repr(err) or "412" in repr(err):
            return False
        raise


def read_object(url: str, key: str, storage_options: dict[str, Any] | None) -> bytes | None:
    """The bytes of url/key, or None when it does not exist."""
    fs, path = fsspec.core.url_to_fs(url, **fsspec_options(url, storage_options))
    try:
        data: bytes = fs.cat_file(f"{path.rstrip('/')}/{key}")
        return data
    except FileNotFoundError:
        return None


def object_names(url: str, prefix: str, storage_options: dict[str, Any] | None) -> list[str]:
    """Names of the objects directly in url that start with `prefix`, sorted, from a fresh
    listing (object-store listings are cached per client)."""
    fs, path = fsspec.core.url_to_fs(url, **fsspec_options(url, storage_options))
    fs.invalidate_cache(path)
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    names = (str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in entries)
    return sorted(name for name in names if name.startswith(prefix))


def object_key(arr: zarr.Array, coords: tuple[int, ...]) -> str:
    """The store key of the chunk (or shard) of `arr` at chunk-grid coordinates `coords`."""
    return f"{arr.store_path.path}/{arr.metadata.encode_chunk_key(coords)}"


def manifest(refs: Sequence[ObjectRef]) -> dict[str, list[Any]]:
    """{array name: [key, size, crc32]} of each referenced object, read back concurrently."""
    prototype = default_buffer_prototype()

    async def fetch() -> list[Any]:
        return list(
            await asyncio.gather(
                *(a.store_path.store.get(object_key(a, c), prototype) for _, a, c in refs)
            )
        )

    out: dict[str, list[Any]] = {}
    for (name, arr, coords), buf in zip(refs, sync(fetch()), strict=True):
        data = b"" if buf is None else buf.to_bytes()
        out[name] = [object_key(arr, coords), len(data), zlib.crc32(data)]
    return out


def object_bytes(store: Any, keys: Sequence[str]) -> list[bytes | None]:
    """The bytes of each key of a zarr store (None for an absent one), fetched concurrently."""
    prototype = default_buffer_prototype()

    async def fetch() -> list[Any]:
        return list(await asyncio.gather(*(store.get(k, prototype) for k in keys)))

    return [None if b is None else b.to_bytes() for b in sync(fetch())]


def object_sizes(store: Any, keys: Sequence[str]) -> list[int | None]:
    """The size of each key of a zarr store (None for an absent one), in one concurrent round."""

    async def size(key: str) -> int | None:
        try:
            return int(await store.getsize(key))
        except FileNotFoundError:
            return None

    async def fetch() -> list[int | None]:
        return list(await asyncio.gather(*(size(k) for k in keys)))

    return sync(fetch())
