"""`kdcache predict`: a finetuned model (a finetune run's model/ folder) over new texts.

Input: a corpus SOURCE streamed by `teacher_infer.corpora.stream_corpus` (text, JSONL, CSV, Parquet,
a folder...; its bad-input policy: bad rows skipped and counted, a missing or unreadable file
stops with FILE:LINE), or ``-`` for standard input (one text per line; empty lines and invalid
UTF-8 are skipped and counted). It is read, predicted and written `CHUNK` texts at a time, so
memory does not grow with the input. Output: one JSON object per text, in input order::

    {"id": "f.txt:3", "text": "...", "domain": "sport", "probability": 0.97}             DC
    {"id": "f.txt:4", "text": "flights to boston", "intent": "atis_flight",
     "probability": 0.99,
     "slots": [{"slot": "toloc.city_name", "text": "boston", "start": 2, "end": 3}]}    ICNER

Words are the text's whitespace words (the store's word ids for tagged text); `start`/`end`
are word indices, end exclusive. A word's tag is the slot head's argmax at its first sub-token
(evaluation's rule), slots are the BIO spans seqeval decodes from the word tags; words beyond
the model's max_length tokens get "O". Words past max_length are counted as truncated for
both tasks (a DC text is classified from its first max_length tokens).
"""

from __future__ import annotations

import itertools
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from logit_store import UserError
from student_train.configs import PredictConfig
from student_train.evaluate import slot_set
from student_train.saved_model import TaskModelFolder, load_task_model
from student_train.task_data import word_level_tags
from teacher_infer.corpora import no_text_read, stream_corpus
from teacher_infer.corpus_records import printable_name

STDIN = "-"
LABEL_KEY = {"dc": "domain", "icner": "intent"}
MAX_EXAMPLES = 5
CHUNK = 1024  # texts read, predicted and written at a time (memory does not grow with input)
Texts = Iterator[tuple[str, str]]


@dataclass
class Predictor:
    """Batch inference with a loaded model folder (`load_predictor`)."""

    model: TaskModelFolder
    batch_size: int = 32
    truncated_words: int = 0

    def __post_init__(self) -> None:
        if self.model.tokenizer is None:
            raise UserError(
                f"{self.model.folder}: no tokenizer saved with this model (the store's "
                "tokenizer was not found when it was finetuned); save it there with "
                "AutoTokenizer.from_pretrained(TOKENIZER).save_pretrained(FOLDER)"
            )

    def _batch(self, words: list[list[str]]) -> list[dict[str, Any]]:
        enc = self.model.tokenizer(
            words,
            is_split_into_words=True,
            truncation=True,
            max_length=self.model.max_length,
            padding=True,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        class_logits, slot_logits = self.model.logits(enc["input_ids"], enc["attention_mask"])
        probs = torch.softmax(class_logits.float(), dim=-1)
        best = probs.argmax(-1).tolist()
        names, key = self.model.class_names, LABEL_KEY[self.model.task]
        out = []
        for b, row_words in enumerate(words):
            row: dict[str, Any] = {key: names[best[b]], "probability": float(probs[b, best[b]])}
            word_ids = np.array([-1 if w is None else w for w in enc.word_ids(b)])
            self.truncated_words += len(row_words) - len(np.unique(word_ids[word_ids >= 0]))
            if slot_logits is not None:
                tag_names = self.model.tag_names
                token_tags = [tag_names[t] for t in slot_logits[b].argmax(-1).tolist()]
                tags, _ = word_level_tags(word_ids, token_tags, len(row_words))
                row["tags"] = tags
                row["slots"] = [
                    {"slot": kind, "text": " ".join(row_words[s : e + 1]), "start": s, "end": e + 1}
                    for kind, s, e in sorted(slot_set(tags), key=lambda slot: slot[1])
                ]
            out.append(row)
        return out

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """One dict per text (module docstring, without id/text; ICNER adds the word-level
        "tags"), batched by length."""
        words = [text.split() for text in texts]
        empty = [i for i, w in enumerate(words) if not w]
        if empty:
            raise UserError(f"text {empty[0]} has no words; every text needs at least one")
        order = sorted(range(len(words)), key=lambda i: len(words[i]))
        results: list[dict[str, Any]] = [{} for _ in words]
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            for i, row in zip(rows, self._batch([words[i] for i in rows]), strict=True):
                results[i] = row
        return results


def load_predictor(folder: str | Path, batch_size: int = 32) -> Predictor:
    """A `Predictor` for a finetune run folder or its model/ folder (plain transformers)."""
    return Predictor(load_task_model(folder), batch_size)


def _stdin_texts(stream: Iterable[bytes], skipped: Counter[str], examples: list[str]) -> Texts:
    for line_no, raw in enumerate(stream, start=1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            reason = "invalid_utf8"
        else:
            if text:
                yield f"<stdin>:{line_no}", text
                continue
            reason = "empty_line"
        skipped[reason] += 1
        if len(examples) < MAX_EXAMPLES:
            examples.append(f"<stdin>:{line_no}: {reason}")


@dataclass
class Inputs:
    """The (id, text) pairs of a source (a corpus SOURCE or "-"), streamed in chunks of
    `chunk` texts; `skipped` and `examples` are complete once `chunks()` is exhausted."""

    source: str
    chunk: int = CHUNK
    skipped: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def _texts(self) -> Texts:
        if self.source == STDIN:
            yield from _stdin_texts(sys.stdin.buffer, self.skipped, self.examples)
            return
        stream = stream_corpus(self.source)
        yield from ((t.id, t.text) for t in stream)
        report = stream.report()
        self.skipped.update(report.skipped)
        self.examples.extend(report.examples)

    def chunks(self) -> Iterator[list[tuple[str, str]]]:
        texts = self._texts()
        while chunk := list(itertools.islice(texts, self.chunk)):
            yield chunk

    def nothing_read(self) -> UserError:
        if self.source == STDIN:
            return UserError("<stdin>: no text could be read (give one text per line)")
        return no_text_read(self.source, dict(sorted(self.skipped.items())), self.examples)


def _write_chunks(
    predictor: Predictor, chunks: Iterable[list[tuple[str, str]]], sink: TextIO
) -> int:
    """Predict and write each chunk as JSONL lines (valid UTF-8: `printable_name`); the number of
    texts written."""
    n_texts = 0
    for chunk in chunks:
        results = predictor.predict([text for _, text in chunk])
        lines = []
        for (text_id, text), row in zip(chunk, results, strict=True):
            row.pop("tags", None)
            record = {"id": printable_name(text_id), "text": text, **row}
            lines.append(json.dumps(record, ensure_ascii=False))
        sink.write("\n".join(lines) + "\n")
        n_texts += len(chunk)
    return n_texts


def run_predict(cfg: PredictConfig, stdout: TextIO) -> dict[str, Any]:
    """Predict every text of `cfg.input` chunk by chunk, writing the JSONL as it goes (to
    `cfg.out` or `stdout`), and return a summary: texts, skipped (reason → count), examples,
    truncated words, output."""
    predictor = load_predictor(cfg.model, cfg.batch_size)
    inputs = Inputs(cfg.input, CHUNK)
    chunks = inputs.chunks()
    first = next(chunks, None)
    if first is None:
        raise inputs.nothing_read()
    chunks = itertools.chain([first], chunks)
    if cfg.out is None:
        n_texts = _write_chunks(predictor, chunks, stdout)
    else:
        path = Path(cfg.out)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            sink = path.open("w", encoding="utf-8")
        except OSError as err:
            raise UserError(f"--out {path}: cannot write ({err})") from err
        try:
            with sink:
                n_texts = _write_chunks(predictor, chunks, sink)
        except BaseException as err:
            if path.is_file():  # no partial predictions left behind
                path.unlink()
            if isinstance(err, OSError):
                raise UserError(f"--out {path}: cannot write ({err})") from err
            raise
    return {
        "texts": n_texts,
        "skipped": dict(sorted(inputs.skipped.items())),
        "examples": inputs.examples[:MAX_EXAMPLES],
        "truncated_words": predictor.truncated_words,
        "task": predictor.model.task,
        "out": cfg.out or "<stdout>",
    }
