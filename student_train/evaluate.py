"""Task metrics for the finetuned students: DC (accuracy, macro-F1) and ICNER (intent accuracy,
slot F1, semantic error rate, exact match), and accuracy per gold label (domain or intent).

All functions take label *strings*, so a test label never seen in training (which the model
cannot predict) simply counts as an error instead of needing an id. Slot tags are word-level BIO
sequences; slots are the entities seqeval's `get_entities` extracts from them (default,
conlleval-style decoding: a stray ``I-x`` opens a new ``x`` slot).

Semantic error rate (SER), per utterance u with reference slots R_u, hypothesis slots H_u
(each slot = (type, first word, last word)) and intent error e_u in {0, 1}::

    SER = sum_u (S_u + D_u + I_u + e_u) / sum_u (|R_u| + 1)

where slots are aligned one-to-one in three passes: (1) identical slots are correct;
(2) remaining pairs with the same type are substitutions (right slot, wrong value);
(3) remaining pairs with overlapping spans are substitutions (right value, wrong slot type).
Unpaired reference slots are deletions D_u, unpaired hypothesis slots insertions I_u. The "+1"
counts the intent as one more semantic unit per utterance (the slot error rate of Makhoul et al.
1999, extended with the intent as in NLU evaluation practice). Pass (2) is lenient: a pair of
the same type anywhere in the utterance, even with disjoint spans, is one substitution, not a
deletion plus an insertion.

Slot precision is undefined without predicted slots, recall without reference slots, and F1
without either (seqeval reports 0 there, so a perfect all-``O`` prediction would score 0):
those are None (``null`` in metrics.json), and ``slot_note`` says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

Slot = tuple[str, int, int]  # (type, first word, last word), inclusive as seqeval returns it
Scores = dict[str, float | str | None]  # a task's test scores (None: undefined), and notes


def accuracy(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Fraction of positions where y_pred == y_true."""
    assert len(y_true) == len(y_pred) and len(y_true) > 0
    return sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / len(y_true)


def per_label_accuracy(
    y_true: Sequence[str], y_pred: Sequence[str]
) -> dict[str, dict[str, float | int]]:
    """Per gold label g (sorted): ``{"n": n_g, "accuracy": correct_g / n_g}`` over the positions
    whose true label is g. Σ n_g = N and Σ n_g · accuracy_g / N = `accuracy(y_true, y_pred)`."""
    assert len(y_true) == len(y_pred) and len(y_true) > 0
    counts: dict[str, list[int]] = {}
    for t, p in zip(y_true, y_pred, strict=True):
        seen = counts.setdefault(t, [0, 0])
        seen[0] += 1
        seen[1] += t == p
    return {g: {"n": n, "accuracy": hits / n} for g, (n, hits) in sorted(counts.items())}


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Unweighted mean over labels in y_true ∪ y_pred of F1 = 2·TP / (2·TP + FP + FN).

    A label never predicted and never true does not appear; a label with TP = FP = FN = 0
    cannot occur. Equals scikit-learn's ``f1_score(average="macro")`` on the same labels.
    """
    assert len(y_true) == len(y_pred) and len(y_true) > 0
    labels = sorted(set(y_true) | set(y_pred))
    scores = []
    for label in labels:
        tp = sum(t == label and p == label for t, p in zip(y_true, y_pred, strict=True))
        fp = sum(t != label and p == label for t, p in zip(y_true, y_pred, strict=True))
        fn = sum(t == label and p != label for t, p in zip(y_true, y_pred, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def slot_set(tags: Sequence[str]) -> set[Slot]:
    """Slots of one BIO sequence as seqeval decodes them (default mode)."""
    return set(get_entities(list(tags)))


@dataclass(frozen=True)
class SlotErrors:
    """Slot alignment counts for one utterance (see the module docstring)."""

    correct: int
    substitutions: int
    deletions: int
    insertions: int


def align_slots(reference: set[Slot], hypothesis: set[Slot]) -> SlotErrors:
    """Align reference and hypothesis slots one-to-one: exact, then same type, then overlap."""
    ref = sorted(reference - hypothesis, key=lambda s: (s[1], s[2], s[0]))
    hyp = sorted(hypothesis - reference, key=lambda s: (s[1], s[2], s[0]))
    correct = len(reference & hypothesis)
    substitutions = 0
    for same_slot in (
        lambda r, h: r[0] == h[0],
        lambda r, h: r[1] <= h[2] and h[1] <= r[2],
    ):
        for r in list(ref):
            match = next((h for h in hyp if same_slot(r, h)), None)
            if match is not None:
                ref.remove(r)
                hyp.remove(match)
                substitutions += 1
    return SlotErrors(correct, substitutions, deletions=len(ref), insertions=len(hyp))


def semantic_error_rate(
    intents_true: Sequence[str],
    intents_pred: Sequence[str],
    tags_true: Sequence[Sequence[str]],
    tags_pred: Sequence[Sequence[str]],
) -> float:
    """SER = (S + D + I + intent errors) / (reference slots + utterances); module docstring."""
    errors = 0
    units = 0
    for it, ip, tt, tp in zip(intents_true, intents_pred, tags_true, tags_pred, strict=True):
        reference = slot_set(tt)
        counts = align_slots(reference, slot_set(tp))
        errors += counts.substitutions + counts.deletions + counts.insertions + int(it != ip)
        units += len(reference) + 1
    assert units > 0
    return errors / units


def exact_match(
    intents_true: Sequence[str],
    intents_pred: Sequence[str],
    tags_true: Sequence[Sequence[str]],
    tags_pred: Sequence[Sequence[str]],
) -> float:
    """Fraction of utterances whose intent is right and whose slot set equals the reference."""
    hits = [
        it == ip and slot_set(tt) == slot_set(tp)
        for it, ip, tt, tp in zip(intents_true, intents_pred, tags_true, tags_pred, strict=True)
    ]
    assert hits
    return sum(hits) / len(hits)


def dc_metrics(domains_true: Sequence[str], domains_pred: Sequence[str]) -> Scores:
    """Domain classification: accuracy and macro-F1."""
    return {
        "accuracy": accuracy(domains_true, domains_pred),
        "macro_f1": macro_f1(domains_true, domains_pred),
    }


def icner_metrics(
    intents_true: Sequence[str],
    intents_pred: Sequence[str],
    tags_true: Sequence[Sequence[str]],
    tags_pred: Sequence[Sequence[str]],
) -> Scores:
    """Joint intent + slots: intent accuracy, seqeval slot P/R/F1 (None where undefined, with
    a ``slot_note``; module docstring), SER and exact match."""
    true_lists = [list(t) for t in tags_true]
    pred_lists = [list(t) for t in tags_pred]
    has_true = any(slot_set(t) for t in true_lists)
    has_pred = any(slot_set(t) for t in pred_lists)
    scores: Scores = {
        "intent_accuracy": accuracy(intents_true, intents_pred),
        "slot_precision": float(precision_score(true_lists, pred_lists)) if has_pred else None,
        "slot_recall": float(recall_score(true_lists, pred_lists)) if has_true else None,
        "slot_f1": float(f1_score(true_lists, pred_lists)) if has_true or has_pred else None,
        "semantic_error_rate": semantic_error_rate(
            intents_true, intents_pred, true_lists, pred_lists
        ),
        "exact_match": exact_match(intents_true, intents_pred, true_lists, pred_lists),
    }
    if not (has_true and has_pred):
        missing = " and ".join(
            side for side, has in (("reference", has_true), ("predicted", has_pred)) if not has
        )
        scores["slot_note"] = (
            f"no {missing} slots in the test split: slot scores that divide by them are null"
        )
    return scores
