"""Finetuning metrics and label plumbing against hand-computed examples (no store, no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rich.console import Console
from sklearn.metrics import f1_score as sk_f1
from transformers import BertConfig, BertForSequenceClassification

from student_train.evaluate import (
    SlotErrors,
    align_slots,
    dc_metrics,
    exact_match,
    icner_metrics,
    macro_f1,
    semantic_error_rate,
)
from student_train.finetune import print_metrics
from student_train.heads import TaskModel, task_loss
from student_train.task_data import (
    IGNORE_INDEX,
    first_subword_labels,
    length_grouped_batches,
    word_level_tags,
)

# Four utterances, worked by hand (slots = (type, first word, last word)):
#  u1 ref {from 0-0, to 2-3}  hyp {from 0-0, to 2-2}  intent ok  -> 1 correct, 1 S (same type)
#  u2 ref {date 1-1}          hyp {city 0-0}          intent bad -> 1 D, 1 I, 1 intent error
#  u3 ref {city 0-1}          hyp {date 0-1}          intent ok  -> 1 S (overlap, other type)
#  u4 ref {}                  hyp {}                  intent ok  -> exact match
INTENTS_TRUE = ["flight", "fare", "flight", "flight"]
INTENTS_PRED = ["flight", "flight", "flight", "flight"]
TAGS_TRUE = [["B-from", "O", "B-to", "I-to"], ["O", "B-date", "O"], ["B-city", "I-city"], ["O"]]
TAGS_PRED = [["B-from", "O", "B-to", "O"], ["B-city", "O", "O"], ["B-date", "I-date"], ["O"]]


def test_semantic_error_rate_hand_computed() -> None:
    # errors: u1 1 + u2 3 + u3 1 = 5; units: (2+1) + (1+1) + (1+1) + (0+1) = 8
    ser = semantic_error_rate(INTENTS_TRUE, INTENTS_PRED, TAGS_TRUE, TAGS_PRED)
    assert ser == pytest.approx(5 / 8)


def test_slot_alignment_passes() -> None:
    ref = {("to", 2, 3), ("from", 0, 0), ("date", 5, 5)}
    hyp = {("from", 0, 0), ("to", 2, 2), ("city", 5, 6), ("airline", 8, 8)}
    assert align_slots(ref, hyp) == SlotErrors(
        correct=1, substitutions=2, deletions=0, insertions=1
    )
    assert align_slots(set(), {("a", 0, 0)}) == SlotErrors(0, 0, 0, 1)


def test_exact_match_and_seqeval_f1() -> None:
    assert exact_match(INTENTS_TRUE, INTENTS_PRED, TAGS_TRUE, TAGS_PRED) == pytest.approx(0.25)
    metrics = icner_metrics(INTENTS_TRUE, INTENTS_PRED, TAGS_TRUE, TAGS_PRED)
    # 4 reference slots, 4 predicted, 1 exactly right -> P = R = F1 = 1/4
    assert metrics["slot_precision"] == pytest.approx(0.25)
    assert metrics["slot_recall"] == pytest.approx(0.25)
    assert metrics["slot_f1"] == pytest.approx(0.25)
    assert metrics["intent_accuracy"] == pytest.approx(0.75)
    assert metrics["exact_match"] == pytest.approx(0.25)
    # conlleval-style default mode: a leading I- opens a slot, so these match exactly
    assert exact_match(["x"], ["x"], [["I-to", "O"]], [["B-to", "O"]]) == 1.0


def test_slot_scores_without_slots_are_null_not_zero() -> None:
    """An all-O test split predicted perfectly: SER 0 and exact match 1, and slot P/R/F1 are
    undefined (seqeval would say F1 = 0)."""
    intents, tags = ["a", "b"], [["O", "O"], ["O"]]
    perfect = icner_metrics(intents, intents, tags, tags)
    assert perfect["semantic_error_rate"] == 0.0 and perfect["exact_match"] == 1.0
    assert perfect["slot_f1"] is None
    assert perfect["slot_precision"] is None and perfect["slot_recall"] is None
    assert perfect["slot_note"] == (
        "no reference and predicted slots in the test split: slot scores that divide by them "
        "are null"
    )
    assert json.loads(json.dumps(perfect))["slot_f1"] is None
    spurious = icner_metrics(intents, intents, tags, [["B-x", "O"], ["O"]])
    assert spurious["slot_f1"] == 0.0 and spurious["slot_precision"] == 0.0
    assert spurious["slot_recall"] is None and "no reference slots" in str(spurious["slot_note"])
    missed = icner_metrics(intents, intents, [["B-x", "O"], ["O"]], tags)
    assert missed["slot_f1"] == 0.0 and missed["slot_recall"] == 0.0
    assert missed["slot_precision"] is None and "no predicted slots" in str(missed["slot_note"])
    assert "slot_note" not in icner_metrics(INTENTS_TRUE, INTENTS_PRED, TAGS_TRUE, TAGS_PRED)


def test_finetune_table_prints_n_a_for_an_undefined_score() -> None:
    scores = icner_metrics(["a"], ["a"], [["O"]], [["O"]])
    sizes = dict.fromkeys(("n_train", "n_test", "test_unknown_labels", "truncated_words"), 1)
    metrics = {"task": "icner", "corpus": "c", "init": "pretrained", **scores, **sizes}
    metrics |= {"steps": 2, "epochs": 1.0, "time_seconds": 0.5, "config_hash": "0" * 16}
    console = Console(record=True, width=120)
    print_metrics(metrics, console)
    text = console.export_text()
    assert "slot_f1" in text and text.count("n/a") == 3 and "1.0000" in text


def test_macro_f1_hand_computed_and_matches_sklearn() -> None:
    y_true = ["a", "a", "b", "c"]
    y_pred = ["a", "b", "b", "b"]
    # a: 2·1/(2+0+1) = 2/3; b: 2·1/(2+2+0) = 1/2; c: 0  -> mean 7/18
    assert macro_f1(y_true, y_pred) == pytest.approx(7 / 18)
    assert macro_f1(y_true, y_pred) == pytest.approx(sk_f1(y_true, y_pred, average="macro"))
    assert dc_metrics(y_true, y_pred) == pytest.approx({"accuracy": 0.5, "macro_f1": 7 / 18})


def test_first_subword_labelling() -> None:
    word_ids = np.array([-1, 0, 0, 1, 2, 2, 2, -1])
    labels = first_subword_labels(word_ids, [5, 6, 7])
    assert labels.tolist() == [IGNORE_INDEX, 5, IGNORE_INDEX, 6, 7] + [IGNORE_INDEX] * 3


def test_word_level_tags_fill_truncated_words() -> None:
    word_ids = np.array([-1, 0, 0, 1, -1])
    tags, missing = word_level_tags(word_ids, ["O", "B-a", "I-a", "B-b", "O"], n_words=3)
    assert tags == ["B-a", "B-b", "O"]
    assert missing == 1


def test_length_grouped_batches_cover_once_and_group_lengths() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=103)
    batches = length_grouped_batches(lengths, 8, np.random.default_rng(1), group_batches=4)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(103))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < np.ptp(lengths) / 3  # grouped batches are much tighter than random ones
    again = length_grouped_batches(lengths, 8, np.random.default_rng(1), group_batches=4)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))


def test_task_model_shapes_and_loss_ignore_index() -> None:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32,
    )  # fmt: skip
    config.num_labels = 3
    model = TaskModel(BertForSequenceClassification(config), n_tags=5, dropout=0.1)
    ids = torch.randint(1, 50, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    class_logits, tag_logits = model(ids, mask)
    assert class_logits.shape == (2, 3)
    assert tag_logits is not None and tag_logits.shape == (2, 7, 5)
    all_ignored = torch.full((2, 7), IGNORE_INDEX)
    labels = torch.tensor([0, 2])
    only_class = task_loss(class_logits, tag_logits, labels, all_ignored)
    assert torch.isfinite(only_class)
    tag_labels = all_ignored.clone()
    tag_labels[0, 1] = 4
    assert task_loss(class_logits, tag_logits, labels, tag_labels) > only_class
    assert {name for name, _ in model.named_parameters() if "classifier.bert." not in name} == {
        "classifier.classifier.weight", "classifier.classifier.bias",
        "tag_head.weight", "tag_head.bias",
    }  # fmt: skip
