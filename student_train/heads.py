"""Task heads on a Hugging Face encoder: sequence classification (DC) and joint intent
classification + slot tagging (ICNER), plus loading the encoder from a run folder or any
Hugging Face model folder (pretrained weights, or the same architecture randomly initialised).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from logit_store import StoreMeta, UserError
from logit_store.provenance import tokenizer_hash
from student_train.runs import CONFIG_FILE, MODEL_DIR, read_json

Pooling = Literal["cls", "mean"]
POOLINGS: tuple[Pooling, ...] = ("cls", "mean")
Init = Literal["pretrained", "random"]
INITS: tuple[Init, ...] = ("pretrained", "random")


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
    """Identity of the encoder: a distillation run's own config_hash when `model_dir` is RUN/model,
    else sha256 of config.json plus (when `weights`) every weight file in the folder. With
    weights=False (random init) only the architecture counts."""
    run_config = model_dir.parent / CONFIG_FILE
    if weights and model_dir.name == MODEL_DIR and run_config.is_file():
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


def load_encoder(model_dir: Path, init: Init, seed: int) -> PreTrainedModel:
    """The bare encoder (AutoModel) of `model_dir`: its weights, or the same config with fresh
    weights drawn under `seed` (the no-distillation / from-scratch baseline). Weights of other
    heads in the folder (an MLM head) are dropped."""
    torch.manual_seed(seed)
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # "unused weights: cls.predictions...", TP-plan notes
    hf_logging.disable_progress_bar()
    try:
        if init == "random":
            return AutoModel.from_config(AutoConfig.from_pretrained(model_dir))
        return AutoModel.from_pretrained(model_dir)
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


class TaskModel(nn.Module):
    """Encoder + heads.

    hidden (B, L, H) = encoder(input_ids, attention_mask).last_hidden_state
    pooled (B, H)    = hidden[:, 0] ("cls") or the attention-masked mean over L ("mean")
    class_logits (B, C) = W_c · dropout(pooled)        (domain for DC, intent for ICNER)
    tag_logits (B, L, T) = W_t · dropout(hidden)       (ICNER only, n_tags > 0)
    """

    def __init__(
        self,
        encoder: PreTrainedModel,
        n_classes: int,
        n_tags: int,
        pooling: Pooling,
        dropout: float,
    ) -> None:
        super().__init__()
        assert n_classes > 0 and n_tags >= 0 and pooling in POOLINGS
        self.encoder = encoder
        self.pooling = pooling
        hidden = int(encoder.config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.class_head = nn.Linear(hidden, n_classes)
        self.tag_head = nn.Linear(hidden, n_tags) if n_tags > 0 else None

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        class_logits = self.class_head(self.dropout(pooled))
        tag_logits = None if self.tag_head is None else self.tag_head(self.dropout(hidden))
        return class_logits, tag_logits

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights of the heads only (the encoder is saved separately when wanted)."""
        return {
            name: tensor.detach().float().cpu().contiguous()
            for name, tensor in self.state_dict().items()
            if not name.startswith("encoder.")
        }


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
