"""The zarr arrays of one corpus: names, dtypes, chunking and codecs.

Every array gets a crc32c checksum codec, so a flipped bit fails the read instead of decoding
into wrong targets. Numeric arrays are blosc(zstd, bit-shuffle): bit-shuffling groups the
always-zero high bits of small gaps, ids and quantized values, which is most of the saving.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import fsspec
import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec
from zarr.core.sync import sync

from logit_store import target_codec
from logit_store.errors import StoreCorruptError, UserError
from logit_store.layout import UnitLayout
from logit_store.meta import CorpusPlan, StoreMeta
from logit_store.storage_options import fsspec_options, protocol

META_KEY = "kdcache"
CORPUS_KEY = "kdcache_corpus"
CORPORA_GROUP = "corpora"
PLAN_CHUNK = 262144

PLAN_ARRAYS = ("plan_lengths", "plan_positions")
SEQUENCE_ARRAYS = ("records", "split")
TOKEN_ARRAYS = ("input_ids", "word_ids")
POSITION_ARRAYS = ("positions", "masked_ids", "target_ids", "target_values", "tail_logmass")
TABLE_CHUNK = 4096


def unit_arrays(meta: StoreMeta) -> tuple[str, ...]:
    """The arrays holding data of every unit (`done` aside); ``tail_logmass`` only for top-k."""
    names = (*PLAN_ARRAYS, *SEQUENCE_ARRAYS, *TOKEN_ARRAYS, *POSITION_ARRAYS, "id_table")
    return tuple(n for n in names if n != "tail_logmass" or meta.encoding == "topk")


def table_slot(meta: StoreMeta, layout: UnitLayout) -> int:
    """Room for one unit's id table: every class at most, one id per stored entry at most,
    rounded up to whole table chunks."""
    need = min(meta.num_classes, layout.position_slot * meta.width)
    return -(-need // TABLE_CHUNK) * TABLE_CHUNK if need > TABLE_CHUNK else need


def child_array(group: zarr.Group, name: str) -> zarr.Array:
    arr = group[name]
    assert isinstance(arr, zarr.Array), f"{name} is not an array"
    return arr


def attrs_dict(group: zarr.Group, key: str) -> dict[str, Any]:
    value = group.attrs[key]
    assert isinstance(value, dict), f"attribute {key} is not a mapping"
    return dict(value)


def numeric_codecs() -> list[Any]:
    return [BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"), Crc32cCodec()]


def text_codecs() -> list[Any]:
    return [ZstdCodec(level=5), Crc32cCodec()]


def open_root(url: str, mode: str, storage_options: dict[str, Any] | None) -> zarr.Group:
    """Open the store's root group; local paths and any fsspec URL zarr accepts.

    For URLs, `storage_options` go through `fsspec_options` (typed, nested, s3 endpoint); any
    failure to reach the store (missing bucket, credentials, endpoint, filesystem package)
    becomes a UserError naming the URL and where credentials come from.
    """
    remote = protocol(url) is not None
    kwargs: dict[str, Any] = {}
    if storage_options and remote:
        kwargs["storage_options"] = fsspec_options(url, storage_options)
    try:
        return zarr.open_group(store=url, mode=mode, zarr_format=3, **kwargs)  # type: ignore[arg-type]
    except FileNotFoundError as err:
        if mode == "r":
            raise UserError(f"{url}: no kdcache store here ({err}); check the path") from err
        raise UserError(f"{url}: cannot create the store ({err}); does the bucket exist?") from err
    except (FileExistsError, NotADirectoryError) as err:
        raise UserError(f"{url}: is a file, not a store folder; choose another path") from err
    except ValueError as err:  # unreadable zarr.json (JSONDecodeError is a ValueError)
        raise StoreCorruptError(f"{url}: its root metadata cannot be read ({err})") from err
    except Exception as err:
        if not remote:
            raise
        raise UserError(
            f"{url}: cannot open ({type(err).__name__}: {err}). Credentials and endpoint come "
            "from the environment (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
            "AWS_ENDPOINT_URL) or --storage-option KEY=VALUE (e.g. endpoint_url=http://HOST:9000)"
        ) from err


def read_target_ids(
    array: Callable[[str], zarr.Array], u: int, table_slot: int, start: int, n: int
) -> np.ndarray:
    """Stored rank gaps of positions [start, start + n) -> absolute ids, via unit u's id table."""
    gaps = np.asarray(array("target_ids")[start : start + n])
    used = int(np.cumsum(gaps, axis=1, dtype=np.int64).max()) + 1 if gaps.size else 0
    table = np.asarray(array("id_table")[u * table_slot : u * table_slot + used])
    return target_codec.ids_from_gaps(gaps, table)


def check_store_target(url: str, storage_options: dict[str, Any] | None) -> None:
    """Refuse a store path that holds something other than a kdcache store (a file, a folder
    of other files, another zarr group), before anything is written there. A store whose
    creation was interrupted (only ``zarr.json`` and ``corpora/``) is accepted, so it resumes."""
    fs, path = fsspec.core.url_to_fs(url, **fsspec_options(url, storage_options))
    try:
        if fs.isfile(path):
            raise UserError(f"{url}: is a file, not a store folder; choose another --out path")
        entries = {name.rstrip("/").rsplit("/", 1)[-1] for name in fs.ls(path, detail=False)}
    except FileNotFoundError:
        return
    if entries <= {"zarr.json", CORPORA_GROUP}:
        return
    with contextlib.suppress(UserError, KeyError):
        if META_KEY in open_root(url, "r", storage_options).attrs:
            return
    listed = ", ".join(sorted(entries)[:5]) + (" ..." if len(entries) > 5 else "")
    raise UserError(
        f"{url}: not empty and not a kdcache store (holds {listed}); "
        "choose a new --out path (nothing was written)"
    )


def missing_unit_objects(
    array: Callable[[str], zarr.Array], names: Iterable[str], u: int, sequences: range
) -> list[str]:
    """Names of the arrays whose stored object for unit u (sequences `sequences`) is absent.

    The writer stores every object of a unit, empty ones included, so an absent object was
    deleted: zarr would silently read it as zeros. The existence checks run concurrently (one
    round trip on object storage, not one per array).
    """
    checks: list[tuple[str, Any, str]] = []
    for name in names:
        try:
            arr = array(name)
        except (KeyError, ValueError) as err:  # deleted or unreadable zarr.json
            raise ValueError(f"array {name!r}: metadata missing or unreadable ({err!r})") from err
        step = arr.metadata.chunk_grid.chunk_shape[0]  # type: ignore[attr-defined]
        rows = {sequences[0] // step, sequences[-1] // step} if name in PLAN_ARRAYS else {u}
        for row in sorted(rows):
            key = arr.metadata.encode_chunk_key((row,) + (0,) * (arr.ndim - 1))
            checks.append((name, arr.store_path.store, f"{arr.store_path.path}/{key}"))

    async def exist() -> list[bool]:
        return list(await asyncio.gather(*(store.exists(key) for _, store, key in checks)))

    found = sync(exist())
    return list(
        dict.fromkeys(name for (name, _, _), ok in zip(checks, found, strict=True) if not ok)
    )


def create_corpus_arrays(
    group: zarr.Group, meta: StoreMeta, plan: CorpusPlan, layout: UnitLayout
) -> None:
    """Create every array of a corpus (no unit data yet) and write its plan."""
    n, units = plan.num_sequences, layout.n_units
    s, t, p, w = layout.unit_size, layout.token_slot, layout.position_slot, meta.width
    plan_chunk = min(PLAN_CHUNK, n)
    for name, values in (("plan_lengths", plan.lengths), ("plan_positions", plan.n_positions)):
        arr = group.create_array(
            name,
            shape=(n,),
            dtype="int32",
            chunks=(plan_chunk,),
            compressors=numeric_codecs(),
            fill_value=0,
            overwrite=True,
        )
        arr[:] = values.astype(np.int32)
    group.create_array(
        "done",
        shape=(units,),
        dtype="uint8",
        chunks=(1,),
        compressors=[Crc32cCodec()],
        fill_value=0,
        overwrite=True,
    )
    for name in SEQUENCE_ARRAYS:
        group.create_array(
            name,
            shape=(units * s,),
            dtype=str,
            chunks=(s,),
            compressors=text_codecs(),
            fill_value="",
            overwrite=True,
        )
    for name in TOKEN_ARRAYS:
        group.create_array(
            name,
            shape=(units * t,),
            dtype="int32",
            chunks=(layout.token_chunk,),
            shards=(t,),
            compressors=numeric_codecs(),
            fill_value=0,
            overwrite=True,
        )
    pc = layout.position_chunk
    for name in ("positions", "masked_ids"):
        group.create_array(
            name,
            shape=(units * p,),
            dtype="int32",
            chunks=(pc,),
            shards=(p,),
            compressors=numeric_codecs(),
            fill_value=0,
            overwrite=True,
        )
    group.create_array(
        "target_ids",
        shape=(units * p, w),
        dtype="uint32",
        chunks=(pc, w),
        shards=(p, w),
        compressors=numeric_codecs(),
        fill_value=0,
        overwrite=True,
    )
    group.create_array(
        "target_values",
        shape=(units * p, w),
        dtype=target_codec.value_dtype(meta),
        chunks=(pc, w),
        shards=(p, w),
        compressors=numeric_codecs(),
        fill_value=0,
        overwrite=True,
    )
    ts = table_slot(meta, layout)
    group.create_array(
        "id_table",
        shape=(units * ts,),
        dtype="uint32",
        chunks=(min(TABLE_CHUNK, ts),),
        shards=(ts,),
        compressors=numeric_codecs(),
        fill_value=0,
        overwrite=True,
    )
    if meta.encoding == "topk":
        group.create_array(
            "tail_logmass",
            shape=(units * p,),
            dtype="float32",
            chunks=(pc,),
            shards=(p,),
            compressors=numeric_codecs(),
            fill_value=0.0,
            overwrite=True,
        )


def layout_attrs(meta: StoreMeta, layout: UnitLayout) -> dict[str, int]:
    return {
        "table_slot": table_slot(meta, layout),
        "unit_size": layout.unit_size,
        "token_slot": layout.token_slot,
        "position_slot": layout.position_slot,
        "token_chunk": layout.token_chunk,
        "position_chunk": layout.position_chunk,
        "n_units": layout.n_units,
    }
