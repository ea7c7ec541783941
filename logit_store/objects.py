"""The raw objects behind a store: create-once records and the manifest of a unit's objects.

* `create_once(url, key, data)` writes an object only if none exists, atomically: a hard link of
  a finished temporary file on local disk, ``If-None-Match: *`` on S3 (s3fs ``mode="create"``).
  Exactly one of several racing writers wins; the others read the winner's object.
* `object_names(url, prefix)` lists the objects directly in a store's root by name prefix (the
  root's per-corpus records, `arrays.corpus_record_key`).
* `WrittenObjects.manifest(...)` gives the key, size and crc32 of each object a unit just
  wrote, which the unit's done record keeps: as the writer's store saw it go out, read back
  only for an object it did not see; `object_sizes` re-reads only the sizes (one
  concurrent round of requests), enough to detect a truncated, emptied or deleted object before
  decoding it as fill values; `verify` compares the checksums too.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import fsspec
import zarr
from zarr.abc.store import ByteRequest, OffsetByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import WrapperStore

from logit_store.storage_options import fsspec_options, protocol

ObjectRef = tuple[str, str]  # (array name, store key of the object)
CREATE_ONCE_PREFIX = ".create-once-"  # the temporary file a local create-once links from


def create_once(url: str, key: str, data: bytes, storage_options: dict[str, Any] | None) -> bool:
    """Write url/key unless it exists; True when this call created it."""
    if protocol(url) is None:
        path = os.path.join(url, key)
        if os.path.lexists(path):  # no temporary file: a rerun on a read-only store proceeds
            return False
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=CREATE_ONCE_PREFIX)
        except OSError as err:  # name the object, not the temporary file
            raise OSError(err.errno, err.strerror, path) from err
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


class WrittenObjects(WrapperStore[Store]):
    """The writer's store (shared state: `writing`, `written`, kept by the copies zarr makes).

    `writing` holds the keys of the objects of the units being written. Each is written whole:
    zarr's read of what it held before (a shard it would merge the new inner chunks into) is
    answered "absent" without a request, so the object is exactly what this write encodes, never
    merged with what an interrupted attempt left there. As it is set (or deleted: size 0) its
    size and crc32 are noted in `written`, so the unit's `manifest` needs no read-back. Only
    those objects are noted, and `forget` drops them with their unit: memory is bounded by the
    units in flight, not by the units written.

    Every other whole-object read is sent as a read from offset 0: s3fs asks an object's size
    (a HEAD, and a listing when it is absent) before a plain read, not before a ranged one, so
    each metadata or identity object a writer reads is one GET (404 when absent)."""

    def __init__(
        self,
        store: Store,
        writing: set[str] | None = None,
        written: dict[str, tuple[int, int]] | None = None,
    ) -> None:
        super().__init__(store)
        self.writing: set[str] = set() if writing is None else writing
        self.written: dict[str, tuple[int, int]] = {} if written is None else written

    def _with_store(self, store: Store) -> WrittenObjects:
        return WrittenObjects(store, self.writing, self.written)

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        if key in self.writing:
            return None
        return await self._store.get(key, prototype, byte_range or OffsetByteRequest(0))

    async def set(self, key: str, value: Buffer) -> None:
        await self._store.set(key, value)
        if key in self.writing:
            data = value.to_bytes()
            self.written[key] = (len(data), zlib.crc32(data))

    async def _set_many(self, values: Iterable[tuple[str, Buffer]]) -> None:
        await asyncio.gather(*(self.set(key, value) for key, value in values))

    async def delete(self, key: str) -> None:
        await self._store.delete(key)
        if key in self.writing:
            self.written[key] = (0, 0)

    async def manifest(self, objects: Sequence[ObjectRef]) -> dict[str, list[Any]]:
        """{array name: [key, size, crc32]} of each (name, key) of a unit being written, as
        noted when it was set; read back (concurrently) for an object it did not see."""
        unseen = [key for _, key in objects if key not in self.written]
        prototype = default_buffer_prototype()
        fetched = await asyncio.gather(
            *(self._store.get(key, prototype, OffsetByteRequest(0)) for key in unseen)
        )
        for key, buf in zip(unseen, fetched, strict=True):
            data = b"" if buf is None else buf.to_bytes()
            self.written[key] = (len(data), zlib.crc32(data))
        return {name: [key, *self.written[key]] for name, key in objects}

    def forget(self, keys: Iterable[str]) -> None:
        """The unit of `keys` is written (or failed): its objects are ordinary objects again."""
        for key in keys:
            self.writing.discard(key)
            self.written.pop(key, None)


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
