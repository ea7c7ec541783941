"""Labelled finetuning data read from the store: DC and ICNER splits, label vocabularies,
first-subword slot labels and length-grouped batches (padded as tensors by `task_batches`).

The corpora are never re-read: token ids, word ids and the record fields (split, domain,
intent, BIO tags) all come from the store the teacher wrote, so the student sees exactly the
tokenisation the teacher saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from logit_store import UserError

Task = Literal["dc", "icner"]
TASKS: tuple[Task, ...] = ("dc", "icner")
READ_BATCH = 512  # sequences per store read
IGNORE_INDEX = -100  # torch cross-entropy ignore_index: non-first subwords, specials, padding


@dataclass(frozen=True)
class TaskSplit:
    """One split of a task corpus, N sequences.

    input_ids[n] (L_n,) token ids incl. specials; word_ids[n] (L_n,) word index or -1;
    labels[n] the domain (dc) or intent (icner); tags[n] word-level BIO tags (icner only).
    """

    corpus: str
    split: str
    indices: np.ndarray
    input_ids: list[np.ndarray]
    word_ids: list[np.ndarray]
    labels: list[str]
    tags: list[list[str]] | None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.input_ids], dtype=np.int64)


def check_task_corpus(corpus: Any, name: str, task: Task) -> None:
    """Refuse, before any training, a task corpus `name` that cannot give a meaningful score:
    no "train" or no "test" split, a sequence without the task's label (domain for DC, intent
    for ICNER) or, for ICNER, without tags, and a DC train split of fewer than two domains.
    Reads only the records (no targets)."""
    splits = np.asarray(corpus.split_array())
    present = sorted({str(s) for s in splits})
    for split in ("train", "test"):
        if split not in present:
            raise UserError(
                f"corpus {name!r} has no {split!r} sequences (splits present: {present}); "
                "finetuning trains on 'train' and evaluates on 'test' — precompute a task corpus "
                "that carries both splits"
            )
    field = "domain" if task == "dc" else "intent"
    used = np.isin(splits, ["train", "test"])
    ids = corpus.column("id")
    needs = [(field, f"{field} label")] + [("tags", "word-level BIO tag list")] * (task == "icner")
    for column, what in needs:
        values = corpus.column(column)
        missing = [i for i in np.flatnonzero(used) if values[i] is None]
        if missing:
            raise UserError(
                f"corpus {name!r}: {len(missing)} train/test sequences have no {what} "
                f"(first: {ids[missing[0]]!r}); task {task!r} needs one on every train/test "
                "sequence — pick a corpus that has them"
            )
    if task == "dc":
        domains = {
            str(d) for d, s in zip(corpus.column(field), splits, strict=True) if s == "train"
        }
        if len(domains) < 2:
            raise UserError(
                f"corpus {name!r}: its train split has a single domain {sorted(domains)}; "
                "domain classification needs at least two"
            )


def read_task_split(corpus: Any, name: str, task: Task, split: str) -> TaskSplit:
    """Read the sequences of `split` from the store corpus `name` (`corpus = store[name]`),
    which `check_task_corpus` has accepted. ICNER tags must cover every word id."""
    indices = np.flatnonzero(np.asarray(corpus.split_array()) == split)
    column = corpus.column("domain" if task == "dc" else "intent")
    ids_column = corpus.column("id")
    tag_column = corpus.column("tags") if task == "icner" else None
    input_ids, word_ids, labels, tags = [], [], [], []
    for start in range(0, len(indices), READ_BATCH):
        chunk = indices[start : start + READ_BATCH]
        batch = corpus.batch(chunk)  # padded tensors; unpad with the attention mask
        lengths = batch.attention_mask.sum(1).tolist()
        for row, (i, n) in enumerate(zip(chunk.tolist(), lengths, strict=True)):
            input_ids.append(batch.input_ids[row, :n].numpy().astype(np.int64))
            word_ids.append(batch.word_ids[row, :n].numpy().astype(np.int64))
            labels.append(str(column[i]))
            if tag_column is not None:
                seq_tags, top = tag_column[i], int(word_ids[-1].max(initial=-1))
                if len(seq_tags) <= top:
                    raise UserError(
                        f"corpus {name!r} sequence {ids_column[i]!r}: {len(seq_tags)} word-level "
                        f"tags for its {top + 1} words; ICNER needs a BIO tag per word"
                    )
                tags.append([str(t) for t in seq_tags])
    return TaskSplit(
        name, split, indices, input_ids, word_ids, labels, tags if task == "icner" else None
    )


def label_vocab(names: Sequence[str]) -> tuple[str, ...]:
    """Sorted unique names; the index is the class id."""
    return tuple(sorted(set(names)))


def first_subword_labels(word_ids: np.ndarray, word_labels: Sequence[int]) -> np.ndarray:
    """Token-level labels (L,) from word-level ones: the first token of each word gets its
    word's label, later subwords and special tokens (word id -1) get IGNORE_INDEX."""
    out = np.full(len(word_ids), IGNORE_INDEX, dtype=np.int64)
    seen: set[int] = set()
    for t, w in enumerate(word_ids.tolist()):
        if w >= 0 and w not in seen:
            seen.add(w)
            out[t] = word_labels[w]
    return out


def word_level_tags(
    word_ids: np.ndarray, token_tags: Sequence[str], n_words: int, fill: str = "O"
) -> tuple[list[str], int]:
    """Word-level tags (n_words,) read at each word's first token; words with no token
    (truncated away by max_length) get `fill`. Returns (tags, number of filled words)."""
    tags: list[str | None] = [None] * n_words
    for t, w in enumerate(word_ids.tolist()):
        if 0 <= w < n_words and tags[w] is None:
            tags[w] = token_tags[t]
    missing = sum(tag is None for tag in tags)
    return [fill if tag is None else tag for tag in tags], missing


def length_grouped_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, group_batches: int = 50
) -> list[np.ndarray]:
    """Shuffle, sort by length inside blocks of `group_batches` batches, cut into batches and
    shuffle the batches: little padding, still a random order each epoch (deterministic in rng)."""
    order = rng.permutation(len(lengths))
    block = batch_size * group_batches
    batches: list[np.ndarray] = []
    for start in range(0, len(order), block):
        chunk = order[start : start + block]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches in length order (no shuffling needed)."""
    order = np.argsort(lengths, kind="stable")
    return [order[j : j + batch_size] for j in range(0, len(order), batch_size)]
