"""Lexical metrics of task texts against other texts, and the text normalisation for duplicates.

Tokens are lower-cased ``\\w+`` runs. With unigram distributions p (task) and q (other):

* JSD(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m), m = ½(p + q), in bits: 0 identical, 1 disjoint
  vocabularies.
* OOV rate = share of task *tokens* whose type never occurs in the other texts.

The unrelated reference of both is their ceiling (JSD = 1, OOV = 1: no shared vocabulary). Values
come as (R+1, 1+G) tables like `distribution`: bootstrap replicates resample the task texts.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np
from scipy import sparse

from similarity.distribution import group_weights

_TOKEN = re.compile(r"\w+")
_NOT_WORD = re.compile(r"[\W_]+")
_ASCII_NOT_WORD = str.maketrans({c: " " for c in map(chr, range(128)) if not c.isalnum()})


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def normalise_text(text: str) -> str:
    """Key under which two texts are identical: NFKC, case-folded, punctuation/spacing dropped.

    ASCII text takes a fast path with the same result (NFKC leaves ASCII alone, casefold is
    lower(), and ``[\\W_]`` is every ASCII character but a letter or digit): the exact-duplicate
    scan of a whole generic corpus calls this once per line.
    """
    if text.isascii():
        return " ".join(text.lower().translate(_ASCII_NOT_WORD).split())
    return " ".join(_NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split())


def _count_matrix(texts: Sequence[str], vocab: dict[str, int]) -> sparse.csr_matrix:
    """(n_texts, |vocab|) token counts; tokens are added to ``vocab`` as they are first seen."""
    rows, cols = [], []
    for row, text in enumerate(texts):
        for token in tokens(text):
            rows.append(row)
            cols.append(vocab.setdefault(token, len(vocab)))
    data = np.ones(len(rows), dtype=np.float64)
    return sparse.csr_matrix((data, (rows, cols)), shape=(len(texts), len(vocab)))


def _jsd_bits(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """JSD in bits between rows of p (r, V) and the vector q (V,); both already normalised."""
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=1)
    return 0.5 * (kl_p + kl_q)


def lexical_tables(
    task_texts: Sequence[str],
    other_texts: Sequence[str],
    groups: np.ndarray,
    n_groups: int,
    indices: list[np.ndarray],
) -> dict[str, np.ndarray]:
    """{"unigram_jsd": table, "oov_rate": table} of the task texts against the other texts."""
    vocab: dict[str, int] = {}
    other = np.asarray(_count_matrix(other_texts, vocab).sum(axis=0)).ravel()
    task = _count_matrix(task_texts, vocab)
    other = np.pad(other, (0, len(vocab) - len(other)))
    q = other / max(other.sum(), 1.0)
    task_tokens = np.asarray(task.sum(axis=1)).ravel()
    oov_tokens = np.asarray(task[:, other == 0].sum(axis=1)).ravel()
    jsd_rows, oov_rows = [], []
    for idx in indices:
        weights = group_weights(idx, groups, n_groups, len(task_texts))
        counts = np.asarray(task.T @ weights.T).T
        totals = counts.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), 0.0)
            jsd = np.where(totals[:, 0] > 0, _jsd_bits(p, q), np.nan)
            oov = (weights @ oov_tokens) / (weights @ task_tokens)
        jsd_rows.append(jsd)
        oov_rows.append(oov)
    return {"unigram_jsd": np.array(jsd_rows), "oov_rate": np.array(oov_rows)}
