"""Task models on a Hugging Face encoder: sequence classification (DC) and joint intent
classification + slot tagging (ICNER), built from the standard `AutoModelFor...` classes so the
finetuned model ships as plain Hugging Face folders, plus loading the encoder from a run folder
or any Hugging Face model folder (pretrained weights, or the same architecture randomly
initialised).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.utils import logging as hf_logging

from logit_store import StoreMeta, UserError, tokenizer_hash
from student_train.configs import Init
from student_train.runs import CONFIG_FILE, MODEL_DIR, read_json
from teacher_infer.teacher import readable_weights

_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def resolve_model_dir(path: str | Path) -> Path:
    """A distillation run folder (RUN/model holds the student) or a Hugging Face model folder."""
    root = Path(path)
    if (root / MODEL_DIR / "config.json").is_file():
        return root / MODEL_DIR
    if (root / "config.json").is_file():
        try:
            AutoConfig.from_pretrained(root)
        except (ValueError, OSError) as err:
            raise UserError(f"{root}/config.json: not a Hugging Face model config ({err})") from err
        return root
    raise UserError(
        f"{root}: neither a run folder (RUN/model/config.json) nor a Hugging Face model folder "
        "(config.json); pass a distillation run, a teacher folder or a save_pretrained folder"
    )


def check_tokenizer(model_dir: Path, meta: StoreMeta) -> None:
    """Refuse an encoder that reads token ids with another tokenizer than the store's: a
    distillation (or init) run records its store's tokenizer hash; a folder holding a tokenizer
    (the teacher, a save_pretrained folder) is hashed. A folder with neither is not checked
    (its embedding size still is, against the store's ids)."""
    run_config = model_dir.parent / CONFIG_FILE
    found, where = None, f"{model_dir}"
    if model_dir.name == MODEL_DIR and run_config.is_file():
        found = read_json(run_config).get("store_identity", {}).get("tokenizer_hash")
        where = f"{run_config} (store_identity.tokenizer_hash)"
    if found is None and any((model_dir / name).is_file() for name in _TOKENIZER_FILES):
        found = tokenizer_hash(AutoTokenizer.from_pretrained(model_dir))
        where = f"{model_dir} (its tokenizer)"
    if found is not None and found != meta.tokenizer_hash:
        raise UserError(
            f"{where}: tokenizer differs from the store's ({meta.tokenizer_id!r}): its token "
            "ids would be misread; finetune a student distilled from this store (or --init random)"
        )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(model_dir: Path, weights: bool) -> str:
    """Identity of the encoder: a run's own config_hash when `model_dir` is RUN/model (weights
    or not: what a sweep plans before the run exists, `identity.encoder_fingerprint`), else
    sha256 of config.json plus (when `weights`) every weight file in the folder. With
    weights=False (random init) only the architecture counts."""
    run_config = model_dir.parent / CONFIG_FILE
    if model_dir.name == MODEL_DIR and run_config.is_file():
        run_hash = json.loads(run_config.read_text()).get("config_hash")
        if run_hash:
            return f"run:{run_hash}"
    digest = hashlib.sha256((model_dir / "config.json").read_bytes())
    if weights:
        for path in sorted(model_dir.iterdir()):
            if path.suffix in _WEIGHT_SUFFIXES:
                digest.update(path.name.encode())
                digest.update(_file_sha256(path).encode())
    return digest.hexdigest()[:16]


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports ("unused weights: cls.predictions...", "newly
    initialised: classifier...") and progress bars: kdcache says what it loaded itself."""
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def label_config(model_dir: Path, names: tuple[str, ...], dropout: float) -> PretrainedConfig:
    """`model_dir`'s config with the label maps of `names` (id i = names[i]) and the class-head
    dropout (`classifier_dropout`, where the architecture reads it)."""
    return AutoConfig.from_pretrained(
        model_dir,
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
        classifier_dropout=dropout,
    )


def load_classifier(
    model_dir: Path, init: Init, seed: int, names: tuple[str, ...], dropout: float
) -> PreTrainedModel:
    """`AutoModelForSequenceClassification` of `model_dir` over the classes `names`: its encoder
    weights (or the same config with fresh weights drawn under `seed`, the no-distillation
    baseline) and the architecture's own class head, new (seeded). Weights of other heads in
    the folder (an MLM head) are dropped; a pooler the folder lacks (a masked-LM student) is
    new too."""
    config = label_config(model_dir, names, dropout)
    torch.manual_seed(seed)
    try:
        with quiet_transformers():
            if init == "random":
                return AutoModelForSequenceClassification.from_config(config)
            with readable_weights(model_dir):
                model = AutoModelForSequenceClassification.from_pretrained(model_dir, config=config)
    except ValueError as err:  # an architecture without a sequence-classification class
        raise UserError(f"{model_dir}: no AutoModelForSequenceClassification ({err})") from err
    return model


def check_token_classifier(config: PretrainedConfig) -> None:
    """Refuse an architecture whose `AutoModelForTokenClassification` head is not one Linear
    `classifier` on the encoder's hidden states (BERT, RoBERTa / XLM-R, DistilBERT, DeBERTa,
    ELECTRA... have it), the head `TaskModel` trains; built on the meta device (no memory)."""
    with torch.device("meta"):
        try:
            tagger = AutoModelForTokenClassification.from_config(config)
        except ValueError as err:
            message = f"{config.model_type}: no AutoModelForTokenClassification ({err})"
            raise UserError(message) from err
    prefix = f"{tagger.base_model_prefix}."
    head = {name for name, _ in tagger.named_parameters() if not name.startswith(prefix)}
    if head != {"classifier.weight", "classifier.bias"}:
        raise UserError(
            f"{config.model_type}: its token-classification head ({sorted(head)}) is not a single "
            "Linear `classifier`; ICNER supports BERT-, RoBERTa-, DistilBERT- and DeBERTa-style "
            "encoders"
        )


class TaskModel(nn.Module):
    """A sequence classifier, plus a slot tagger on the same encoder for ICNER.

    classifier: `AutoModelForSequenceClassification` (the encoder and the architecture's class
    head; BERT: tanh(W · hidden[:, 0]) pooler → dropout → Linear), class_logits (B, C)
    (domain for DC, intent for ICNER);
    tag_head: tag_logits (B, L, T) = W_t · dropout(hidden), hidden (B, L, H) the encoder's last
    hidden states — exactly `AutoModelForTokenClassification`'s head, so the two standard
    classes reproduce the model (`saved_model.save_task_model`); ICNER only (n_tags > 0).
    """

    def __init__(self, classifier: PreTrainedModel, n_tags: int, dropout: float) -> None:
        super().__init__()
        assert n_tags >= 0
        self.classifier = classifier
        hidden = int(classifier.config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.tag_head = nn.Linear(hidden, n_tags) if n_tags > 0 else None

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        tags = self.tag_head is not None
        out = self.classifier(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=tags
        )
        if self.tag_head is None:
            return out.logits, None
        return out.logits, self.tag_head(self.dropout(out.hidden_states[-1]))


def task_loss(
    class_logits: torch.Tensor,
    tag_logits: torch.Tensor | None,
    labels: torch.Tensor,
    tag_labels: torch.Tensor | None,
) -> torch.Tensor:
    """Cross-entropy of the class head, plus (ICNER) the token-level slot cross-entropy averaged
    over first-subword positions; the two are summed with weight 1 each."""
    loss = F.cross_entropy(class_logits.float(), labels, ignore_index=-100)
    if tag_logits is not None:
        assert tag_labels is not None
        if not bool((tag_labels != -100).any()):  # no labelled word in the batch: 0/0
            return loss
        loss = loss + F.cross_entropy(
            tag_logits.float().flatten(0, 1), tag_labels.flatten(), ignore_index=-100
        )
    return loss
