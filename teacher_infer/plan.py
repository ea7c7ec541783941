"""Tokenize a unit of texts and choose its labelled positions before the teacher runs.

The plan is cheap, deterministic and local to a unit: it depends only on the unit's texts and
their record numbers in the corpus (`corpus_index`), so every process (and every rerun after a
crash) derives the same sequences, lengths and masks for a unit without reading any other unit;
planning units one by one equals planning the whole corpus at once, array for array:

* tokenization with the teacher's fast tokenizer; texts that come with ``words`` (e.g. ATIS with
  word-level BIO tags) are tokenized with ``is_split_into_words`` so ``word_ids`` maps every token
  to its word (and so to its tag); special tokens get word id -1;
* sequences longer than ``max_length`` tokens are truncated (counted as ``truncated``), texts
  that tokenize to no ordinary token are skipped (counted as ``empty_tokenization``);
* BERT-style masking (DESIGN §4): each ordinary token is selected with probability ``mask_prob``
  (at least one per sequence); a selected token becomes [MASK] with probability 0.8, a uniformly
  random vocabulary id with 0.1, and stays unchanged with 0.1. Every random number is a
  counter-based hash of (seed, corpus name, record number, token index, stream), so the masks
  do not depend on units, batching, process count or platform;
* labelled positions: the masked ones (``positions="masked"``) or every ordinary token
  (``"all"``) in MLM mode; index 0 for a sequence-classification teacher; every ordinary token for
  a token-classification teacher.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from logit_store import EncodedRecords
from teacher_infer.corpus_records import MAX_EXAMPLES, CorpusText

TOKENIZE_BATCH = 512
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class MaskingSpec:
    """What the teacher sees and where it is labelled; recorded in the store's metadata."""

    mode: str  # "mlm" | "task"
    task_kind: str | None  # task mode: "sequence" | "token"
    mask_prob: float
    seed: int
    positions: str  # "masked" | "all"

    def to_meta(self) -> dict[str, Any]:
        if self.mode == "task":
            return {"scheme": "none", "positions": f"task-{self.task_kind}"}
        return {
            "scheme": "bert-80-10-10",
            "mask_prob": self.mask_prob,
            "seed": self.seed,
            "positions": self.positions,
        }


@dataclass(frozen=True)
class PlannedUnit:
    """Texts tokenized and masked. Ragged arrays are flat with ``(N + 1,)`` offsets.

    input_ids (T,) original ids; word_ids (T,) word index or -1; token_offsets (N + 1,)
    positions (P,) index within its sequence; masked_ids (P,) id the teacher sees there;
    position_offsets (N + 1,); teacher input = input_ids with masked_ids written at positions.
    records: the sequences' records (`CorpusText.to_record`), encoded as the store keeps them
    (encoding is a cost per sequence, paid here, in the host worker that planned the unit);
    skipped: reason -> count of the texts dropped here ("truncated" counts kept-but-cut texts);
    examples: "FILE:LINE: reason".
    """

    input_ids: np.ndarray
    word_ids: np.ndarray
    token_offsets: np.ndarray
    positions: np.ndarray
    masked_ids: np.ndarray
    position_offsets: np.ndarray
    records: EncodedRecords
    skipped: dict[str, int]
    examples: list[str]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.token_offsets)

    @property
    def n_positions(self) -> np.ndarray:
        return np.diff(self.position_offsets)

    def __len__(self) -> int:
        return len(self.token_offsets) - 1

    def teacher_input(self, i: int) -> np.ndarray:
        """(L,) ids the teacher sees for sequence i: the original ids with masks applied."""
        ids = self.input_ids[self.token_offsets[i] : self.token_offsets[i + 1]].copy()
        p0, p1 = self.position_offsets[i], self.position_offsets[i + 1]
        ids[self.positions[p0:p1]] = self.masked_ids[p0:p1]
        return ids


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic): a strong 64-bit mixer."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
    return x ^ (x >> np.uint64(31))


def uniform_hash(
    seed: int, corpus: str, seq: np.ndarray, tok: np.ndarray, stream: int
) -> np.ndarray:
    """Uniform [0, 1) floats keyed by (seed, corpus, sequence index, token index, stream)."""
    digest = hashlib.sha256(f"{seed}\x00{corpus}\x00{stream}".encode()).digest()
    base = np.uint64(int.from_bytes(digest[:8], "little"))
    with np.errstate(over="ignore"):
        h = _splitmix64(base ^ seq.astype(np.uint64))
        h = _splitmix64(h ^ tok.astype(np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


# a selected token's action draw: [0, 0.8) -> [MASK], [0.8, 0.9) -> a random id, else unchanged
MASK_BELOW, RANDOM_BELOW = 0.8, 0.9


def bert_masked(ids: Any, selected: Any, action: Any, random_ids: Any, mask_id: int) -> Any:
    """BERT 80/10/10 masking of `ids`: a selected token whose `action` draw (uniform [0, 1)) is
    below 0.8 becomes `mask_id`, one in [0.8, 0.9) becomes its `random_ids` entry, the others stay.

    Written with ``&``, ``~``, ``*`` and ``+`` only, which numpy arrays (the plan's fixed masks)
    and torch tensors (teacher adaptation's dynamic masks) share: one rule for both."""
    to_mask = selected & (action < MASK_BELOW)
    to_random = selected & (action >= MASK_BELOW) & (action < RANDOM_BELOW)
    return to_mask * mask_id + to_random * random_ids + ~(to_mask | to_random) * ids


def _backend(tokenizer: Any, max_length: int) -> Any:
    """A private copy of a fast tokenizer's Rust backend, truncating as `tokenizer(...,
    truncation=True, max_length=...)` does; None for a slow tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    key = (id(tokenizer), max_length)
    if key not in _BACKENDS:
        from tokenizers import Tokenizer

        copy = Tokenizer.from_str(backend.to_str())
        copy.no_padding()
        direction = getattr(tokenizer, "truncation_side", "right")
        copy.enable_truncation(max_length, stride=0, strategy="longest_first", direction=direction)
        _BACKENDS[key] = (tokenizer, copy)  # the tokenizer is kept so its id is never reused
    return _BACKENDS[key][1]


_BACKENDS: dict[tuple[int, int], tuple[Any, Any]] = {}


def _encode(
    tokenizer: Any, inputs: list[Any], pretok: bool, max_length: int
) -> tuple[list[list[int]], list[list[int | None]], list[bool]]:
    """(ids, word ids, truncated) per input."""
    backend = _backend(tokenizer, max_length)
    if backend is not None:
        encs = backend.encode_batch(inputs, is_pretokenized=pretok, add_special_tokens=True)
        return (
            [e.ids for e in encs],
            [e.word_ids for e in encs],
            [bool(e.overflowing) for e in encs],
        )
    enc = tokenizer(
        inputs,
        is_split_into_words=pretok,
        truncation=True,
        max_length=max_length,
        return_overflowing_tokens=True,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    ids: list[list[int]] = [[] for _ in inputs]
    words: list[list[int | None]] = [[] for _ in inputs]
    seen: set[int] = set()
    for row, sample in enumerate(enc["overflow_to_sample_mapping"]):
        if sample not in seen:  # later rows of a sample are overflow pieces
            seen.add(sample)
            ids[sample], words[sample] = enc["input_ids"][row], enc.word_ids(row)
    pieces = np.bincount(enc["overflow_to_sample_mapping"], minlength=len(inputs))
    return ids, words, (pieces > 1).tolist()


def _tokenize(
    tokenizer: Any, texts: Sequence[CorpusText], max_length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flat token ids and word ids (-1 = special), tokens per text and truncated flags, in text
    order; texts with words (tags) are tokenized pre-split, so word ids index their words."""
    ids: list[list[int]] = [[] for _ in texts]
    words: list[list[int | None]] = [[] for _ in texts]
    truncated = np.zeros(len(texts), dtype=bool)
    for lo in range(0, len(texts), TOKENIZE_BATCH):
        chunk = texts[lo : lo + TOKENIZE_BATCH]
        for pretok in (True, False):
            idx = [i for i, t in enumerate(chunk) if (t.words is not None) == pretok]
            if not idx:
                continue
            inputs = [chunk[i].words if pretok else chunk[i].text for i in idx]
            got_ids, got_words, cut = _encode(tokenizer, inputs, pretok, max_length)
            for j, i in enumerate(idx):
                ids[lo + i], words[lo + i] = got_ids[j], got_words[j]
                truncated[lo + i] = cut[j]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    total = int(lengths.sum())
    flat_ids = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=total)
    flat_words = np.array(list(itertools.chain.from_iterable(words)), dtype=np.float64)
    flat_words = np.where(np.isnan(flat_words), -1, flat_words).astype(np.int64)
    return flat_ids, flat_words, lengths, truncated


def _select_positions(
    name: str, lengths: np.ndarray, word_ids: np.ndarray, record_ids: np.ndarray, spec: MaskingSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labelled positions, sequence index, selected-for-masking flags) on the flat token axis."""
    n = len(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    seq = np.repeat(np.arange(n), lengths)
    tok = np.arange(int(offsets[-1])) - offsets[seq]
    ordinary = word_ids >= 0
    if spec.mode == "task":
        keep = tok == 0 if spec.task_kind == "sequence" else ordinary
        return np.flatnonzero(keep), seq, np.zeros(len(seq), bool)
    if n == 0:
        return np.zeros(0, np.int64), seq, np.zeros(0, bool)
    u = uniform_hash(spec.seed, name, record_ids[seq], tok, stream=0)
    u = np.where(ordinary, u, 2.0)  # special tokens are never candidates
    selected = u < spec.mask_prob
    if spec.mask_prob > 0:  # at least one masked position: the candidate with the smallest u
        first_min = np.minimum.reduceat(u, offsets[:-1])
        none = np.add.reduceat(selected, offsets[:-1]) == 0
        is_min = (u == first_min[seq]) & none[seq] & ordinary
        # keep only the first minimum per sequence (ties are astronomically rare but possible)
        flat = np.flatnonzero(is_min)
        _, first = np.unique(seq[flat], return_index=True)
        selected[flat[first]] = True
    keep = selected if spec.positions == "masked" else ordinary
    return np.flatnonzero(keep), seq, selected


def plan_texts(
    name: str,
    texts: Sequence[CorpusText],
    record_ids: np.ndarray,
    tokenizer: Any,
    spec: MaskingSpec,
    max_length: int,
    vocab_size: int,
) -> PlannedUnit:
    """Tokenize, truncate, mask and choose labelled positions for texts of corpus `name`.

    record_ids: (len(texts),) each text's record number in the corpus (the masking key).
    """
    all_ids, all_words, all_lengths, cut = _tokenize(tokenizer, texts, max_length)
    starts = np.cumsum(all_lengths) - all_lengths
    ordinary = np.add.reduceat(all_words >= 0, starts) if len(all_words) else all_lengths * 0
    kept = (all_lengths > 0) & (ordinary > 0)
    keep = np.flatnonzero(kept)
    dropped = np.flatnonzero(~kept).tolist()
    truncated = np.flatnonzero(cut & kept).tolist()
    token_kept = np.repeat(kept, all_lengths)
    lengths = all_lengths[keep]
    input_ids, word_ids = all_ids[token_kept], all_words[token_kept]
    records = np.asarray(record_ids, dtype=np.int64)[keep]
    flat_pos, seq, selected = _select_positions(name, lengths, word_ids, records, spec)
    token_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    teacher_ids = input_ids.copy()
    if spec.mode == "mlm" and len(seq):
        tok = np.arange(len(seq)) - token_offsets[seq]
        action = uniform_hash(spec.seed, name, records[seq], tok, stream=1)
        random_id = np.floor(
            uniform_hash(spec.seed, name, records[seq], tok, stream=2) * vocab_size
        ).astype(np.int64)
        teacher_ids = bert_masked(teacher_ids, selected, action, random_id, tokenizer.mask_token_id)

    pos_seq = seq[flat_pos]
    n_positions = np.bincount(pos_seq, minlength=len(lengths)).astype(np.int64)
    examples: list[str] = []
    for reason, indices in (("truncated", truncated), ("empty_tokenization", dropped)):
        for i in indices[: max(0, MAX_EXAMPLES - len(examples))]:
            examples.append(f"{texts[i].file}:{texts[i].line}: {reason}")
    return PlannedUnit(
        input_ids=input_ids,
        word_ids=word_ids,
        token_offsets=token_offsets,
        positions=(flat_pos - token_offsets[pos_seq]).astype(np.int64),
        masked_ids=teacher_ids[flat_pos],
        position_offsets=np.concatenate([[0], np.cumsum(n_positions)]).astype(np.int64),
        records=EncodedRecords.of([texts[i].to_record() for i in keep.tolist()]),
        skipped={"truncated": len(truncated), "empty_tokenization": len(dropped)},
        examples=examples,
    )
