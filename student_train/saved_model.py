"""A finetuned task model as plain Hugging Face folders, and loading it back.

    RUN/model/         AutoModelForSequenceClassification: domain (DC) or intent (ICNER) with
                       id2label / label2id, and the store's tokenizer. config.json also holds
                       "kdcache": {task, max_length, store, corpus, config_hash} (where it came
                       from; `export` finds the test split there)
    RUN/model/slots/   ICNER only: AutoModelForTokenClassification over the BIO tags, holding
                       the same encoder weights, and the tokenizer

Each folder loads on its own with plain transformers. The joint ICNER model in one encoder pass
(what `load_task_model` and `kdcache predict` run; word-level slots are read at each word's
first sub-token, as evaluation does)::

    out = intents(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    intent_logits, slot_logits = out.logits, slots.classifier(out.hidden_states[-1])
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
)

from logit_store import StoreMeta, UserError, tokenizer_hash
from student_train.heads import TaskModel, label_config, quiet_transformers
from student_train.runs import WEIGHTS_FILE, read_json
from student_train.students import model_with_weights
from student_train.task_data import TASKS, Task
from teacher_infer.teacher import readable_weights

SLOTS_DIR = "slots"
TOKENIZER_FILE = "tokenizer_config.json"


def store_tokenizer(meta: StoreMeta, model_dir: Path) -> Any:
    """The tokenizer whose ids the store holds: the store's tokenizer folder, else the
    student's own, whichever hashes to `meta.tokenizer_hash`; None when neither does (a store
    written from a hub name while offline, or a synthetic one)."""
    for folder in (Path(meta.tokenizer_id), model_dir):
        if (folder / TOKENIZER_FILE).is_file():
            tokenizer = AutoTokenizer.from_pretrained(folder)
            if tokenizer_hash(tokenizer) == meta.tokenizer_hash:
                return tokenizer
    return None


def save_task_model(
    model: TaskModel, folder: Path, tag_names: tuple[str, ...], tokenizer: Any, info: dict[str, Any]
) -> None:
    """Write `model` as the folders of the module docstring (replacing an older copy); `info`
    becomes config.kdcache. The tokenizer is saved with `model_max_length` = info's max_length
    (the store's; at most the model's positions)."""
    shutil.rmtree(folder, ignore_errors=True)
    classifier = model.classifier
    classifier.config.kdcache = info
    classifier.save_pretrained(folder)
    parts = [folder]
    if model.tag_head is not None:
        config = label_config(folder, tag_names, model.dropout.p)
        with torch.device("meta"):  # only its class and its keys
            skeleton = AutoModelForTokenClassification.from_config(config)
        prefix = skeleton.base_model_prefix
        state = {f"{prefix}.{k}": v for k, v in classifier.base_model.state_dict().items()}
        state.update({f"classifier.{k}": v for k, v in model.tag_head.state_dict().items()})
        wanted = skeleton.state_dict().keys()
        assert wanted <= state.keys(), sorted(wanted - state.keys())
        state = {k: state[k] for k in wanted}  # the encoder's pooler is not the tagger's
        tagger = model_with_weights(type(skeleton), config, state, copy=False)
        tagger.save_pretrained(folder / SLOTS_DIR)
        parts.append(folder / SLOTS_DIR)
    if tokenizer is not None:
        # plain `tok(text, truncation=True)` then truncates as the model was finetuned (and as
        # `predict` does), never past its positions. A shallow copy: only this attribute
        # differs, and save_pretrained reads the rest (a deep copy serialises the backend, 70 ms)
        tokenizer = copy.copy(tokenizer)
        positions = int(classifier.config.max_position_embeddings)
        tokenizer.model_max_length = min(int(info.get("max_length") or positions), positions)
        for part in parts:
            tokenizer.save_pretrained(part)


def saved_model_complete(folder: Path, task: Task) -> bool:
    """Whether `folder` holds the model a finished run of `task` writes (a run from before
    models were always saved has none, and is redone rather than skipped)."""
    parts = [folder] + [folder / SLOTS_DIR] * (task == "icner")
    return all((p / "config.json").is_file() and (p / WEIGHTS_FILE).is_file() for p in parts)


def _label_names(model: PreTrainedModel) -> tuple[str, ...]:
    labels = {int(i): name for i, name in (model.config.id2label or {}).items()}
    return tuple(labels[i] for i in range(len(labels)))


@dataclass(frozen=True)
class TaskModelFolder:
    """A loaded RUN/model folder: `classifier` (domain or intent), `tagger` (ICNER slots) or
    None, the tokenizer (None if the folder has none), and config.kdcache."""

    folder: Path
    task: Task
    classifier: PreTrainedModel
    tagger: PreTrainedModel | None
    tokenizer: Any
    info: dict[str, Any]

    @property
    def class_names(self) -> tuple[str, ...]:
        return _label_names(self.classifier)

    @property
    def tag_names(self) -> tuple[str, ...]:
        assert self.tagger is not None
        return _label_names(self.tagger)

    @property
    def max_length(self) -> int:
        """Tokens per input the model was finetuned on (the store's max_length)."""
        return int(self.info.get("max_length") or self.classifier.config.max_position_embeddings)

    @torch.no_grad()
    def logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """class_logits (B, C) and (ICNER) slot_logits (B, L, T), one encoder pass."""
        out = self.classifier(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=self.tagger is not None,
        )
        if self.tagger is None:
            return out.logits, None
        head = self.tagger.get_submodule("classifier")
        return out.logits, head(out.hidden_states[-1])


def resolve_task_folder(path: str | Path) -> Path:
    """A finetune run folder (its model/) or a RUN/model folder itself."""
    root = Path(path)
    for folder in (root / "model", root):
        config = folder / "config.json"
        if config.is_file() and "kdcache" in read_json(config):
            return folder
    raise UserError(
        f"{root}: not a finetuned kdcache model (no model/config.json or config.json with a "
        "'kdcache' section); pass a `kdcache finetune --out` folder or its model/ folder"
    )


def load_task_model(path: str | Path) -> TaskModelFolder:
    """Load a finetuned model folder (`resolve_task_folder`) with plain transformers, in eval
    mode."""
    folder = resolve_task_folder(path)
    info = read_json(folder / "config.json")["kdcache"]
    task = info.get("task")
    if task not in TASKS or not saved_model_complete(folder, task):
        raise UserError(
            f"{folder}: incomplete model (task {task!r}; needs config.json and {WEIGHTS_FILE}"
            f"{' and slots/' if task == 'icner' else ''}); rerun the finetune that wrote it"
        )
    with quiet_transformers():
        with readable_weights(folder):
            classifier = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        tagger = None
        if task == "icner":
            with readable_weights(folder / SLOTS_DIR):
                tagger = AutoModelForTokenClassification.from_pretrained(folder / SLOTS_DIR).eval()
    tokenizer = None
    if (folder / TOKENIZER_FILE).is_file():
        tokenizer = AutoTokenizer.from_pretrained(folder)
    return TaskModelFolder(folder, task, classifier, tagger, tokenizer, info)
