"""The teacher-logit store: a self-describing Zarr v3 group of sparse teacher targets.

Knows nothing of models. The writer side (`create_store`) is used by teacher inference, the
reader side (`open_store`) by students, similarity and the CLI.
"""

from logit_store.errors import StoreCorruptError, StoreMismatchError, UserError
from logit_store.layout import Unit
from logit_store.meta import FORMAT_VERSION, CorpusSpec, StoreMeta
from logit_store.reader import (
    Corpus,
    SequenceRecord,
    SparseBatch,
    Store,
    open_store,
    stored_corpus_index,
)
from logit_store.records import SparseTargets
from logit_store.writer import StoreWriter, UnitData, consolidate_store, create_store

__all__ = [
    "FORMAT_VERSION",
    "Corpus",
    "CorpusSpec",
    "SequenceRecord",
    "SparseBatch",
    "SparseTargets",
    "Store",
    "StoreCorruptError",
    "StoreMeta",
    "StoreMismatchError",
    "StoreWriter",
    "Unit",
    "UnitData",
    "UserError",
    "consolidate_store",
    "create_store",
    "open_store",
    "stored_corpus_index",
]
