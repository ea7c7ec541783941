"""An opened store: its metadata validated on open, its corpora by name (`reader.Corpus`).

store = open_store("cache.zarr", expected={"tokenizer_hash": ...})
store.corpora, store["task"], store.complete
"""

from __future__ import annotations

import os
from typing import Any

import zarr

from logit_store.arrays import (
    CORPORA_GROUP,
    CORPUS_KEY,
    META_KEY,
    METADATA_DAMAGE,
    attrs_dict,
    open_root,
)
from logit_store.errors import StoreCorruptError, UserError
from logit_store.meta import StoreMeta
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

    def __getitem__(self, name: str) -> Corpus:
        if name not in self._corpora:
            if name not in self.corpora:
                raise UserError(f"store {self.url} has no corpus {name!r}; it has {self.corpora}")
            self._corpora[name] = Corpus(self, name)
        return self._corpora[name]

    @property
    def complete(self) -> bool:
        return all(self[name].complete for name in self.corpora)


def open_store(
    url: str,
    expected: StoreMeta | dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Store:
    """Open a store for reading; with `expected`, refuse one written with other settings."""
    store = Store(str(url), storage_options)
    store.meta.check(expected, where=f"store {url}")
    return store
