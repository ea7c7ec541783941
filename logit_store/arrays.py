"""The zarr arrays of one corpus: names, dtypes, chunking and codecs.

Every array gets a crc32c checksum codec, so a flipped bit fails the read instead of decoding
into wrong targets. Numeric arrays are blosc(zstd, bit-shuffle): bit-shuffling groups the
always-zero high bits of small gaps, ids and quantized values, which is most of the saving.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import fsspec
import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec
from zarr.core.sync import sync

from logit_store import target_codec
from logit_store.encodings import StoredArray
from logit_store.errors import DamagedAttributesError, StoreCorruptError, UserError
from logit_store.layout import UnitLayout
from logit_store.meta import CorpusSpec, StoreMeta
from logit_store.objects import CREATE_ONCE_PREFIX
from logit_store.sequence_info import FIELDS
from logit_store.storage_options import fsspec_options, protocol

META_KEY = "kdcache"
CORPUS_KEY = "kdcache_corpus"
CORPORA_GROUP = "corpora"
# the root's create-once record of each corpus it ever created, outside the corpus's group, so a
# deleted group is a fault `verify` names: kdcache_corpus.<name, "/" written as "~">.json
CORPUS_RECORD_PREFIX, CORPUS_RECORD_SUFFIX = "kdcache_corpus.", ".json"


def corpus_record_key(name: str) -> str:
    """The root object that records corpus `name` (its segments never hold "~")."""
    return f"{CORPUS_RECORD_PREFIX}{name.replace('/', '~')}{CORPUS_RECORD_SUFFIX}"


def recorded_corpus(key: str) -> str | None:
    """The corpus name a root object `key` records, or None for another object."""
    if not (key.startswith(CORPUS_RECORD_PREFIX) and key.endswith(CORPUS_RECORD_SUFFIX)):
        return None
    name = key[len(CORPUS_RECORD_PREFIX) : -len(CORPUS_RECORD_SUFFIX)]
    return name.replace("~", "/") or None


INDEX_CHUNK = 65536  # rows of the source-index arrays per chunk (written once, at creation)
SUMMARY_CHUNK = 1 << 20  # sequences per chunk of the consolidated per-sequence summary

# array -> (axis, dtype); "position2" arrays have a second axis of `meta.width` columns. The
# encoding's own arrays (`target_values`, top-k `tail_logmass`) come from `unit_arrays`.
UNIT_ARRAYS: dict[str, tuple[str, Any]] = {
    "lengths": ("sequence", "int32"),
    "n_positions": ("sequence", "int32"),
    "records": ("sequence", "str"),
    "split": ("sequence", "str"),
    "input_ids": ("token", "int32"),
    "word_ids": ("token", "int32"),
    "positions": ("position", "int32"),
    "masked_ids": ("position", "int32"),
    "target_ids": ("position2", "uint32"),
    "id_table": ("table", "uint32"),
}
# what each array holds, stored in its attributes (docs/FORMAT.md has the whole specification)
DESCRIPTIONS = {
    "done": "per unit: the done record (JSON), written last; absent = unit not written",
    "lengths": "per sequence: tokens (special tokens included)",
    "n_positions": "per sequence: labelled positions",
    "records": f"per sequence: JSON {{{', '.join(FIELDS)}}}",
    "split": "per sequence: split name",
    "input_ids": "per token: original token id (the tokenizer's vocabulary)",
    "word_ids": "per token: index of its word in the text, -1 for special tokens",
    "positions": "per labelled position: token index within its sequence",
    "masked_ids": "per labelled position: the token id the teacher saw there",
    "target_ids": "per labelled position: row-sorted ranks in the unit's id_table, delta-coded "
    "(first rank absolute, then gaps); NOT token ids",
    "id_table": "per unit: its distinct target ids, most frequent first (rank -> id)",
    "summary_units": "consolidated summary per unit: [consolidated, sequences, tokens, "
    "positions]; its attributes aggregate the done records' skips, labels and splits",
    "summary_lengths": "consolidated summary per sequence: tokens, dense over the consolidated "
    "units in unit order",
    "summary_split": "consolidated summary per sequence: split code (0 none, i = splits[i - 1] "
    "of summary_units' attributes)",
}


def _axis(spec: StoredArray) -> str:
    return "position2" if spec.per_column else "position"


def unit_arrays(meta: StoreMeta) -> dict[str, tuple[str, Any]]:
    """The arrays holding data of every unit (`done` aside) -> (axis, dtype), the encoding's
    arrays included."""
    stored = meta.target_encoding.stored_arrays().items()
    return UNIT_ARRAYS | {name: (_axis(spec), spec.dtype) for name, spec in stored}


# What zarr raises opening a node whose metadata object is missing (KeyError) or unreadable: bad
# JSON (json.JSONDecodeError) or a schema it refuses (MetadataValidationError, both ValueErrors;
# a missing field is a KeyError).
METADATA_DAMAGE = (KeyError, ValueError)


class StoreDamage(Exception):
    """Internal: a stored object is missing, unreadable or inconsistent with its done record.
    Readers turn it into a `StoreCorruptError` naming the corpus and unit, verify into a fault."""


_CHECKSUM_FAILED = "Stored and computed checksum do not match"  # zarr's Crc32cCodec


def read(array: zarr.Array, selection: Any, index: str = "basic") -> np.ndarray:
    """`array[selection]` ("orthogonal": `array.oindex`, "coordinate": `array.vindex`), where
    a damaged object is a StoreDamage: zarr's codecs raise ValueError for a failed crc32c, which
    any truncated, garbled or replaced byte of a chunk fails first (the checksum is the outer
    codec). Only the zarr read is guarded, so a bug in the code around it is not "damage"."""
    indexer: Any = {"basic": array, "orthogonal": array.oindex, "coordinate": array.vindex}[index]
    try:
        return np.asarray(indexer[selection])
    except ValueError as err:
        if _CHECKSUM_FAILED in str(err):  # its message shows raw checksum bytes: not kept
            raise StoreDamage(f"array {array.basename!r} failed its checksum") from err
        raise StoreDamage(f"array {array.basename!r} cannot be read ({err})") from err


def child_array(group: zarr.Group, name: str) -> zarr.Array:
    arr = group[name]
    if not isinstance(arr, zarr.Array):
        raise KeyError(f"{name} is not an array")
    return arr


def attrs_dict(group: zarr.Group | zarr.Array, key: str) -> dict[str, Any]:
    value = group.attrs[key]
    if not isinstance(value, dict):
        raise DamagedAttributesError(
            f"{group.store_path}: attribute {key} in its zarr.json is not a mapping (got "
            f"{type(value).__name__}): the store's metadata is damaged; restore zarr.json from a "
            "copy, or recompute into a new --out store"
        )
    return dict(value)


def numeric_codecs() -> list[Any]:
    return [BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"), Crc32cCodec()]


def text_codecs() -> list[Any]:
    return [ZstdCodec(level=5), Crc32cCodec()]


def open_root(
    url: str,
    mode: str,
    storage_options: dict[str, Any] | None,
    attributes: dict[str, Any] | None = None,
) -> zarr.Group:
    """Open the store's root group; local paths and any fsspec URL zarr accepts. A group
    created here (mode "a") is written with `attributes` in its one metadata object.

    For URLs, `storage_options` go through `fsspec_options` (typed, nested, s3 endpoint); any
    failure to reach the store (missing bucket, credentials, endpoint, filesystem package)
    becomes a UserError naming the URL and where credentials come from.
    """
    remote = protocol(url) is not None
    kwargs: dict[str, Any] = {}
    if attributes is not None and mode == "a":
        kwargs["attributes"] = attributes
    if storage_options and remote:
        kwargs["storage_options"] = fsspec_options(url, storage_options)
    try:
        try:
            return zarr.open_group(store=url, mode=mode, zarr_format=3, **kwargs)  # type: ignore[arg-type]
        except zarr.errors.ContainsGroupError:  # another process created it meanwhile
            kwargs.pop("attributes", None)
            return zarr.open_group(store=url, mode="r+", zarr_format=3, **kwargs)
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
        raise _unreachable(url, err) from err


def _unreachable(url: str, err: Exception) -> UserError:
    """One line for a store URL that cannot be reached, and where its settings come from."""
    return UserError(
        f"{url}: cannot open ({type(err).__name__}: {err}). Credentials and endpoint come "
        "from the environment (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
        "AWS_ENDPOINT_URL) or --storage-option KEY=VALUE (e.g. endpoint_url=http://HOST:9000)"
    )


def read_target_ids(
    array: Callable[[str], zarr.Array], layout: UnitLayout, u: int, n: int
) -> np.ndarray:
    """Stored rank gaps of unit u's first n positions -> absolute ids, via the unit's id table."""
    gaps = read(array("target_ids"), layout.rows("position", u, n))
    used = int(np.cumsum(gaps, axis=1, dtype=np.int64).max()) + 1 if gaps.size else 0
    if used > layout.slot("table"):
        raise StoreDamage("array 'target_ids' points past the unit's id table")
    table = read(array("id_table"), layout.rows("table", u, used))
    return target_codec.ids_from_gaps(gaps, table)


def check_store_target(url: str, storage_options: dict[str, Any] | None) -> None:
    """Refuse a store path that holds something other than a kdcache store (a file, a folder
    of other files, another zarr group), before anything is written there. A store whose
    creation was interrupted (only ``zarr.json``, ``kdcache.json`` and ``corpora/``) is
    accepted, so it resumes."""
    try:
        fs, path = fsspec.core.url_to_fs(url, **fsspec_options(url, storage_options))
        if fs.isfile(path):
            raise UserError(f"{url}: is a file, not a store folder; choose another --out path")
        entries = {name.rstrip("/").rsplit("/", 1)[-1] for name in fs.ls(path, detail=False)}
    except FileNotFoundError:
        return
    except UserError:
        raise
    except Exception as err:  # credentials, endpoint, options, filesystem package
        if protocol(url) is None:
            raise
        raise _unreachable(url, err) from err
    entries = {e for e in entries if not e.startswith(CREATE_ONCE_PREFIX)}  # a racing creator's
    entries = {e for e in entries if recorded_corpus(e) is None}
    if entries <= {"zarr.json", "kdcache.json", CORPORA_GROUP}:
        return
    with contextlib.suppress(UserError, KeyError):
        if META_KEY in open_root(url, "r", storage_options).attrs:
            return
    listed = ", ".join(sorted(entries)[:5]) + (" ..." if len(entries) > 5 else "")
    raise UserError(
        f"{url}: not empty and not a kdcache store (holds {listed}); "
        "choose a new --out path (nothing was written)"
    )


def create_corpus_arrays(group: zarr.Group, meta: StoreMeta, spec: CorpusSpec) -> UnitLayout:
    """Create every array of a corpus that does not exist yet (never overwriting one) and
    write its source index; returns the layout. Safe to repeat: a resume recreates only what
    is missing."""
    one_per_sequence = meta.mode == "task" and meta.task_kind == "sequence"
    layout = UnitLayout.create(
        spec.unit_size,
        meta.max_length,
        spec.n_units,
        one_per_sequence,
        n_classes=meta.num_classes,
        width=meta.width,
    )
    units = layout.n_units
    stored = meta.target_encoding.stored_arrays()
    descriptions = DESCRIPTIONS | {name: array.about for name, array in stored.items()}

    def ensure(name: str, **kwargs: Any) -> zarr.Array | None:
        if name in group:
            return None
        about = descriptions.get(name, "the source index: see docs/FORMAT.md")
        try:
            return group.create_array(name, overwrite=False, attributes={"about": about}, **kwargs)
        except zarr.errors.ContainsArrayError:  # another process created it meanwhile
            return None

    ensure(
        "done", shape=(units,), dtype=str, chunks=(1,), compressors=[Crc32cCodec()], fill_value=""
    )
    for name, (axis, dtype) in unit_arrays(meta).items():
        slot = layout.slot(axis)
        width = (meta.width,) if axis == "position2" else ()
        if axis == "sequence":
            ensure(
                name,
                shape=(units * slot,),
                dtype=str if dtype == "str" else dtype,
                chunks=(slot,),
                compressors=text_codecs() if dtype == "str" else numeric_codecs(),
                fill_value="" if dtype == "str" else 0,
            )
            continue
        ensure(
            name,
            shape=(units * slot, *width),
            dtype=dtype,
            chunks=(layout.chunk(axis), *width),
            shards=(slot, *width),
            compressors=numeric_codecs(),
            fill_value=0,
        )
    for name, values in spec.index_arrays.items():
        values = np.asarray(values)
        arr = ensure(
            f"index_{name}",
            shape=values.shape,
            dtype=values.dtype,
            chunks=(min(INDEX_CHUNK, max(len(values), 1)), *values.shape[1:]),
            compressors=numeric_codecs(),
            fill_value=0,
        )
        if arr is not None:
            arr[...] = values
    return layout


def listed_done_units(done: zarr.Array) -> np.ndarray:
    """Sorted indices of the units whose done record exists: one listing of its objects."""
    prefix = f"{done.store_path.path}/c/"

    async def collect() -> list[str]:
        return [key async for key in done.store_path.store.list_prefix(prefix)]

    names = (key[len(prefix) :] for key in sync(collect()))
    return np.array(sorted(int(n) for n in names if n.isdigit()), dtype=np.int64)
