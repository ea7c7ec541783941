"""The teacher-logit store: a self-describing Zarr v3 group of sparse teacher targets.

Knows nothing of models. The writer side (`create_store`) is used by teacher inference, the
reader side (`open_store`) by students, similarity and the CLI.
"""

import warnings

from logit_store.arrays import check_store_target
from logit_store.batch import SequenceRecord, SparseBatch
from logit_store.encodings import (
    ENCODINGS,
    VALUE_DTYPES,
    Sampled,
    SampledTargets,
    SparseEncoding,
    SparseTargets,
    TopK,
    TopKTargets,
    empty_targets,
    encoding_from_meta,
    log1mexp,
)
from logit_store.errors import DamagedIndexError, StoreCorruptError, StoreMismatchError, UserError
from logit_store.layout import Unit
from logit_store.meta import FORMAT_VERSION, CorpusSpec, StoreMeta
from logit_store.provenance import tokenizer_hash
from logit_store.reader import Corpus
from logit_store.sequence_info import SequenceInfo
from logit_store.source_index import stored_corpus_index
from logit_store.store import Store, open_store
from logit_store.writer import (
    EncodedRecords,
    StoreWriter,
    UnitData,
    consolidate_store,
    create_store,
)

# The create-once identity objects (writer.py) sit beside zarr's own metadata, and a writer
# killed mid-write leaves zarr's temporary `zarr.UUID.partial` file; zarr warns about keys it does
# not know when it walks a group.
warnings.filterwarnings(
    "ignore",
    message=r"Object at (.*/)?(kdcache(_identity)?\.json|zarr\.[0-9a-f]+\.partial) "
    r"is not recognized",
)

__all__ = [
    "ENCODINGS",
    "FORMAT_VERSION",
    "VALUE_DTYPES",
    "Corpus",
    "CorpusSpec",
    "DamagedIndexError",
    "EncodedRecords",
    "Sampled",
    "SampledTargets",
    "SequenceInfo",
    "SequenceRecord",
    "SparseBatch",
    "SparseEncoding",
    "SparseTargets",
    "Store",
    "StoreCorruptError",
    "StoreMeta",
    "StoreMismatchError",
    "StoreWriter",
    "TopK",
    "TopKTargets",
    "Unit",
    "UnitData",
    "UserError",
    "check_store_target",
    "consolidate_store",
    "create_store",
    "empty_targets",
    "encoding_from_meta",
    "log1mexp",
    "open_store",
    "stored_corpus_index",
    "tokenizer_hash",
]
