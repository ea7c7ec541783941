"""An opened store: its metadata validated on open, its corpora by name (`reader.Corpus`).

store = open_store("cache.zarr", expected={"tokenizer_hash": ...})
store.corpora, store["task"], store.complete, store.lost_corpora

The root records every corpus it created (`arrays.corpus_record_key`), so a corpus whose group
was deleted is not silently absent: `store[name]` (and `covering`) of a lost corpus is a
StoreCorruptError that names it and says how to compute it again; the other corpora read as
before. Stores written before those records list only the groups they hold.
"""

from __future__ import annotations

import json
import os
from typing import Any

import zarr

from logit_store.arrays import (
    CORPORA_GROUP,
    CORPUS_KEY,
    META_KEY,
    METADATA_DAMAGE,
    attrs_dict,
    corpus_record_key,
    open_root,
    recorded_corpus,
)
from logit_store.errors import StoreCorruptError, UserError
from logit_store.meta import StoreMeta
from logit_store.objects import object_names, read_object
from logit_store.reader import Corpus


class Store:
    """An opened, validated store. `store[name]` gives a `Corpus`."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url, self.storage_options = url, storage_options
        self._root, self._pid = open_root(url, "r", storage_options), os.getpid()
        if META_KEY not in self.root.attrs:
            raise UserError(
                f"{url}: not a kdcache store, or its creation never finished "
                "(no kdcache metadata); rerun the precompute command that writes it"
            )
        self.meta = StoreMeta.from_dict(attrs_dict(self.root, META_KEY), url)
        self._corpora: dict[str, Corpus] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["storage_options"])  # type: ignore[misc]

    @property
    def root(self) -> zarr.Group:
        """The root group. Reopened in a forked child (DataLoader workers): the parent's
        object-store clients are bound to its event loop and cannot be used there."""
        if self._pid != os.getpid():
            self._root, self._pid = open_root(self.url, "r", self.storage_options), os.getpid()
        return self._root

    def listed_objects(self, listed: dict[str, list[Any]]) -> tuple[Any, list[str]]:
        """The zarr store holding the objects a done record lists, and their keys there."""
        base = self.root.store_path.path
        keys = [f"{base}/{key}" if base else key for key, _, _ in listed.values()]
        return self.root.store_path.store, keys

    @property
    def corpora(self) -> list[str]:
        """Names of the corpora whose creation finished, sorted."""
        names: list[str] = []
        if CORPORA_GROUP not in self.root:
            return names

        def walk(group: zarr.Group, prefix: str) -> None:
            for key, child in group.groups():
                name = f"{prefix}{key}"
                if CORPUS_KEY in child.attrs:
                    names.append(name)
                else:
                    walk(child, f"{name}/")

        try:
            top = self.root[CORPORA_GROUP]
            if not isinstance(top, zarr.Group):
                raise KeyError(f"{CORPORA_GROUP} is not a group")
            walk(top, "")
        except METADATA_DAMAGE as err:
            raise StoreCorruptError(
                f"store {self.url}: a corpus group's metadata cannot be read ({err}). "
                "Run `kdcache verify`."
            ) from err
        return sorted(names)

    @property
    def recorded_corpora(self) -> list[str]:
        """Names of the corpora the root records as created, sorted (empty for a store written
        before those records existed)."""
        names = (recorded_corpus(key) for key in object_names(self.url, "", self.storage_options))
        return sorted(name for name in names if name is not None)

    @property
    def lost_corpora(self) -> list[str]:
        """Recorded corpora whose group is gone (deleted, or its creation never finished)."""
        present = set(self.corpora)
        return [name for name in self.recorded_corpora if name not in present]

    def lost_message(self, name: str) -> str:
        """The one line for the lost corpus `name`: what is gone and how to compute it again."""
        key = corpus_record_key(name)
        source = "SOURCE"
        raw = read_object(self.url, key, self.storage_options)
        try:
            record = json.loads(raw) if raw is not None else {}
            source = str(record.get("source") or source)
        except (ValueError, AttributeError):  # an unreadable record still names the corpus
            pass
        return (
            f"store {self.url}: corpus {name!r} is lost: its group {CORPORA_GROUP}/{name} is "
            f"gone (deleted?) but {key} records it; rerun the precompute command that wrote the "
            f"store with --corpus {name}={source} to compute it again (or delete {key} if the "
            "corpus was removed on purpose)"
        )

    def covering(self, name: str) -> list[str]:
        """The corpora named `name` or under it (`task` covers `task/atis`), sorted; a lost one
        among them is a StoreCorruptError naming it, never a silently smaller selection."""

        def covered(names: list[str]) -> list[str]:
            return [c for c in names if c == name or c.startswith(name + "/")]

        lost = covered(self.lost_corpora)
        if lost:
            raise StoreCorruptError(self.lost_message(lost[0]))
        return covered(self.corpora)

    def has(self, name: str) -> bool:
        """Whether the store holds corpus `name`; a lost one is a StoreCorruptError naming it."""
        if name in self.corpora:
            return True
        if name in self.lost_corpora:
            raise StoreCorruptError(self.lost_message(name))
        return False

    def __getitem__(self, name: str) -> Corpus:
        if name not in self._corpora:
            if not self.has(name):
                raise UserError(f"store {self.url} has no corpus {name!r}; it has {self.corpora}")
            self._corpora[name] = Corpus(self, name)
        return self._corpora[name]

    @property
    def complete(self) -> bool:
        """Every corpus has all its units, and none the root records is lost."""
        return all(self[name].complete for name in self.corpora) and not self.lost_corpora


def open_store(
    url: str,
    expected: StoreMeta | dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Store:
    """Open a store for reading; with `expected`, refuse one written with other settings."""
    store = Store(str(url), storage_options)
    store.meta.check(expected, where=f"store {url}")
    return store
