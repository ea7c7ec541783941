"""Planning: tokenization, truncation/skip counts, deterministic masking, positions, batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from teacher_fixtures import WORDS, minilm_dir, save_tiny_xlmr_mlm
from transformers import AutoTokenizer

from logit_store import SequenceInfo
from teacher_infer.corpus_index import index_source, read_unit
from teacher_infer.corpus_records import CorpusText
from teacher_infer.plan import MaskingSpec, PlannedUnit, plan_texts
from teacher_infer.unit_pipeline import token_budget_batches, unit_batches

MLM = MaskingSpec("mlm", None, 0.15, 0, "masked")


@pytest.fixture(scope="module")
def bert_tok():
    return AutoTokenizer.from_pretrained(minilm_dir())


def _texts(n: int, seed: int = 0) -> list[CorpusText]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(2, 25)))]
        out.append(CorpusText(text=" ".join(words), id=f"t{i}", file="f.txt", line=i + 1))
    return out


def _plan(texts, tok, spec=MLM, max_length=32, name="generic", first=0) -> PlannedUnit:
    records = np.arange(first, first + len(texts))
    return plan_texts(name, texts, records, tok, spec, max_length, len(tok))


PLAN_ARRAYS = (
    "input_ids",
    "word_ids",
    "positions",
    "masked_ids",
    "lengths",
    "n_positions",
)


def test_masking_is_deterministic_and_keyed_per_sequence(bert_tok) -> None:
    texts = _texts(60)
    a, b = _plan(texts, bert_tok), _plan(texts, bert_tok)
    for field in ("input_ids", "positions", "masked_ids", "position_offsets"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    # the last 40 sequences mask identically when planned alone: masks depend on
    # (seed, corpus, record number) only, not on the rest of the corpus or on batching
    tail = _plan(texts[20:], bert_tok, first=20)
    assert np.array_equal(tail.positions, a.positions[a.position_offsets[20] :])
    assert np.array_equal(tail.masked_ids, a.masked_ids[a.position_offsets[20] :])
    other_seed = _plan(texts, bert_tok, MaskingSpec("mlm", None, 0.15, 1, "masked"))
    other_name = _plan(texts, bert_tok, name="task")
    assert not np.array_equal(other_seed.positions, a.positions)
    assert not np.array_equal(other_name.positions, a.positions)


def test_bert_80_10_10_statistics_and_specials_never_masked(bert_tok) -> None:
    plan = _plan(_texts(800, seed=3), bert_tok, max_length=64)
    n = len(plan)
    assert (plan.n_positions >= 1).all()  # at least one masked position per sequence
    seq = np.repeat(np.arange(n), plan.n_positions)
    tok_index = plan.token_offsets[seq] + plan.positions
    assert (plan.word_ids[tok_index] >= 0).all()  # never a special token
    ordinary = int((plan.word_ids >= 0).sum())
    assert abs(len(plan.positions) / ordinary - 0.15) < 0.02
    original = plan.input_ids[tok_index]
    masked = plan.masked_ids == bert_tok.mask_token_id
    same = plan.masked_ids == original
    assert abs(masked.mean() - 0.8) < 0.04
    assert abs(same.mean() - 0.1) < 0.03
    teacher_view = plan.teacher_input(0)
    p0, p1 = plan.position_offsets[:2]
    assert np.array_equal(teacher_view[plan.positions[p0:p1]], plan.masked_ids[p0:p1])


def test_positions_all_and_task_modes(bert_tok) -> None:
    texts = _texts(30)
    every = _plan(texts, bert_tok, MaskingSpec("mlm", None, 0.15, 0, "all"))
    assert len(every.positions) == int((every.word_ids >= 0).sum())
    seq_task = _plan(texts, bert_tok, MaskingSpec("task", "sequence", 0.0, 0, "masked"))
    assert (seq_task.positions == 0).all() and (seq_task.n_positions == 1).all()
    tok_task = _plan(texts, bert_tok, MaskingSpec("task", "token", 0.0, 0, "masked"))
    assert len(tok_task.positions) == int((tok_task.word_ids >= 0).sum())
    seq = np.repeat(np.arange(30), tok_task.n_positions)
    # task mode: the teacher sees the original text
    assert np.array_equal(
        tok_task.masked_ids, tok_task.input_ids[tok_task.token_offsets[seq] + tok_task.positions]
    )


def test_truncation_and_empty_tokenization_are_counted(bert_tok) -> None:
    texts = [
        CorpusText(text=" ".join(["boston"] * 100), id="long", file="f", line=1),
        CorpusText(text="\u200b", id="empty", file="f", line=2),  # tokenizes to nothing
        CorpusText(text="show me flights", id="short", file="f", line=3),
    ]
    plan = _plan(texts, bert_tok, max_length=16)
    assert plan.skipped == {"truncated": 1, "empty_tokenization": 1}
    assert plan.examples == ["f:1: truncated", "f:2: empty_tokenization"]
    assert plan.lengths.tolist() == [16, 5]
    assert [SequenceInfo.from_json(r).id for r in plan.records.json] == ["long", "short"]
    assert plan.input_ids[15] == bert_tok.sep_token_id  # truncation keeps the closing special


def _tagged(words: list[str], tags: list[str]) -> CorpusText:
    return CorpusText(text=" ".join(words), id="x", file="f", line=1, words=words, tags=tags)


@pytest.mark.parametrize("which", ["bert", "xlmr"])
def test_word_ids_map_word_level_tags_to_tokens(which: str, bert_tok, tmp_path: Path) -> None:
    tok = (
        bert_tok if which == "bert" else AutoTokenizer.from_pretrained(save_tiny_xlmr_mlm(tmp_path))
    )
    words = ["flights", "from", "boston", "to", "denver"]
    tags = ["O", "O", "B-city", "O", "B-city"]
    plan = _plan([_tagged(words, tags)], tok, MaskingSpec("task", "token", 0.0, 0, "masked"))
    word_ids = plan.word_ids
    assert word_ids[0] == -1 and word_ids[-1] == -1
    inner = word_ids[1:-1]
    assert (np.diff(inner) >= 0).all() and set(inner.tolist()) == set(range(5))
    token_tags = [tags[w] for w in inner]
    pieces = [str(tok.convert_ids_to_tokens(int(i))) for i in plan.input_ids[1:-1]]
    city_pieces = "".join(p for p, t in zip(pieces, token_tags, strict=True) if t == "B-city")
    assert city_pieces.replace("▁", "").replace("#", "") == "bostondenver"
    assert SequenceInfo.from_json(plan.records.json[0]).tags == tags
    assert plan.records.labels == {"tags": ["B-city", "O"]}


def test_token_budget_batches_cover_once_within_budget() -> None:
    lengths = np.random.default_rng(0).integers(3, 60, size=500)
    batches = token_budget_batches(lengths, 256)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))
    assert all(len(b) * lengths[b].max() <= 256 for b in batches)
    assert (np.diff(lengths[flat]) >= 0).all()  # length-sorted: little padding
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded / lengths.sum() < 1.1


def test_planning_unit_by_unit_equals_planning_the_whole_corpus(bert_tok, tmp_path: Path) -> None:
    """Streaming plans are unit-local: each unit planned alone (from its own bytes) gives, once
    concatenated, exactly the arrays of the whole corpus planned at once."""
    lines = [t.text for t in _texts(150, seed=5)]
    lines[7] = ""  # a skipped record keeps the numbering of the others
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(lines) + "\n")
    index = index_source(str(corpus), unit_size=16)
    units = [read_unit(index, u) for u in range(index.n_units)]
    pieces = [
        plan_texts("generic", u.texts, u.record_ids, bert_tok, MLM, 32, len(bert_tok))
        for u in units
    ]
    texts = [t for u in units for t in u.texts]
    records = np.concatenate([u.record_ids for u in units])
    whole = plan_texts("generic", texts, records, bert_tok, MLM, 32, len(bert_tok))
    assert index.n_units == 10 and len(whole) == 149 and 7 not in records
    for field in PLAN_ARRAYS:
        joined = np.concatenate([getattr(p, field) for p in pieces])
        assert np.array_equal(joined, getattr(whole, field)), field
    batches = unit_batches(pieces[0], 64, bert_tok.pad_token_id)
    rows = np.concatenate([b.rows for b in batches])
    assert sorted(rows.tolist()) == list(range(len(pieces[0].positions)))
    first = batches[0]
    seq = int(np.argsort(pieces[0].lengths, kind="stable")[0])
    assert np.array_equal(
        first.input_ids[0, : pieces[0].lengths[seq]], pieces[0].teacher_input(seq)
    )


class _WrapperOnly:
    """The tokenizer without its Rust backend: plans through `tokenizer(...)`."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)

    @property
    def mask_token_id(self) -> int:
        return self._tokenizer.mask_token_id

    def __len__(self) -> int:
        return len(self._tokenizer)


@pytest.mark.parametrize("which", ["bert", "xlmr"])
def test_backend_tokenization_equals_the_transformers_call(which, bert_tok, tmp_path) -> None:
    tok = (
        bert_tok if which == "bert" else AutoTokenizer.from_pretrained(save_tiny_xlmr_mlm(tmp_path))
    )
    texts = [
        *_texts(40, seed=9),
        _tagged(["flights", "from", "boston"], ["O", "O", "B-city"]),
        CorpusText(text=" ".join(["denver"] * 80), id="long", file="f", line=99),
        CorpusText(text="\u200b", id="empty", file="f", line=100),
    ]
    fast = _plan(texts, tok, max_length=16)
    slow = _plan(texts, _WrapperOnly(tok), max_length=16)
    for field in PLAN_ARRAYS:
        assert np.array_equal(getattr(fast, field), getattr(slow, field)), field
    assert fast.skipped == slow.skipped
    assert fast.skipped["truncated"] >= 2
