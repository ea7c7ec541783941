"""The teacher: load a Hugging Face encoder, fingerprint it, and turn its logits into targets.

Forward pass (`Teacher.logits_at`): the encoder runs on the whole (B, L) batch, but the MLM head
(dense + norm + a vocabulary-sized projection, the expensive part at V = 250k) runs only on the P
labelled positions. That is done generically for every `AutoModelForMaskedLM` whose forward is
``head(base_model(...)[0])`` (BERT, RoBERTa, XLM-R, DistilBERT, DeBERTa, ModernBERT, ...): a
forward hook on ``model.base_model`` replaces its last hidden state (B, L, H) by the gathered
(1, P, H) rows, so the model's own head code sees only those rows. At load time the split is
checked against full logits on a probe batch; a model where it does not hold falls back to full
logits gathered afterwards.

The logits stay on the device; the store encoding's `from_logits` turns them into (P, k) targets
there.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants, try_to_load_from_cache
from safetensors import SafetensorError
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from logit_store import UserError, tokenizer_hash

log = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def teacher_hash(model: nn.Module) -> str:
    """sha256 over (name, dtype, shape, bytes) of every state-dict tensor, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


FUSED_ADAMW_DEVICES = ("cpu", "cuda")  # devices with a fused AdamW kernel (torch >= 2.4)


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without it is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here; use --device cpu or auto")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto: bf16 (fp16 without bf16 support) on CUDA, fp32 on CPU."""
    if dtype != "auto":
        return DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def not_a_model(name_or_path: str, flag: str) -> UserError | None:
    """A clear error when `name_or_path` is a local path that holds no model, else None."""
    path = Path(name_or_path).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        return UserError(f"{flag} {name_or_path!r}: this folder holds no model (no config.json)")
    if path.is_file():
        return UserError(f"{flag} {name_or_path!r}: is a file; give the model's folder")
    if not path.exists() and name_or_path.startswith(("/", "./", "../", "~")):
        return UserError(f"{flag} {name_or_path!r}: no such folder")
    if not path.exists() and constants.HF_HUB_OFFLINE and not _in_hub_cache(name_or_path):
        return UserError(
            f"{flag} {name_or_path!r}: no such folder, and not in the Hugging Face cache "
            "(offline); give a model folder"
        )
    return None


def _in_hub_cache(name: str) -> bool:
    """Whether the local Hugging Face cache holds a model `name`'s config."""
    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # HFValidationError: not a hub model name at all
        return False


@contextlib.contextmanager
def readable_weights(folder: str | Path) -> Iterator[None]:
    """While active, a weights file that cannot be read (truncated, garbled: safetensors refuses
    its header) is a UserError naming it, not a SafetensorError traceback."""
    try:
        yield
    except SafetensorError as err:
        raise UserError(
            f"{folder}/model.safetensors: cannot be read ({err}); re-save it or rerun the "
            "command that wrote it"
        ) from err


def load_tokenizer(name_or_path: str, flag: str = "--teacher") -> Any:
    """The model's tokenizer; a missing folder or hub name is a UserError naming `flag`."""
    problem = not_a_model(name_or_path, flag)
    if problem is not None:
        raise problem
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except Exception as err:  # garbled tokenizer files fail in many ways (JSON, KeyError, Rust)
        raise UserError(
            f"{flag} {name_or_path!r}: cannot load its tokenizer ({one_line(err)}); put the "
            "model's own tokenizer files (tokenizer.json or vocab) in the folder"
        ) from err


def load_config(name_or_path: str, flag: str) -> Any:
    """The model's config; a missing, garbled or type-less config.json is a UserError naming it."""
    problem = not_a_model(name_or_path, flag)
    if problem is not None:
        raise problem
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError, TypeError, KeyError) as err:
        folder = Path(name_or_path).expanduser()
        if not folder.is_dir():  # a hub name that could not be fetched
            raise UserError(
                f"{flag} {name_or_path!r}: cannot load its config ({one_line(err)}); give a "
                "local model folder"
            ) from err
        raise UserError(
            f"{flag} {name_or_path!r}: {folder / 'config.json'} is not a readable model config "
            f"({one_line(err)}); re-save the model (save_pretrained) or give another model folder"
        ) from err


def one_line(err: BaseException) -> str:
    """An exception's message on one line (transformers' messages span several)."""
    return " ".join(str(err).split()) or type(err).__name__


def check_tokenizer_fits(tokenizer: Any, vocab_size: int, where: str) -> None:
    """Refuse a tokenizer whose size does not fit a vocabulary of `vocab_size` ids.

    More tokens than the vocabulary would index past the embeddings; fewer than half is not the
    model's tokenizer (transformers builds a 5-token one for a folder with no tokenizer files,
    and every text becomes [UNK]). Real tokenizers may be a little smaller than the vocabulary
    (embeddings padded to a multiple of 8 or 64, unused ids): those are accepted.
    """
    size = len(tokenizer)
    if size > vocab_size or 2 * size < vocab_size:
        raise UserError(
            f"{where}: its tokenizer has {size} tokens but the model's vocabulary has "
            f"{vocab_size}; put the model's own tokenizer files (tokenizer.json or vocab) "
            "in the folder"
        )


def check_max_length(model: Any, name_or_path: str, max_length: int) -> None:
    """Refuse a --max-length longer than the model's absolute position embeddings."""
    config = model.config
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None or getattr(config, "position_biased_input", True) is False:
        return  # relative positions (DeBERTa-v2): no fixed limit
    padding_idx = getattr(getattr(model.base_model, "embeddings", None), "padding_idx", None)
    if isinstance(padding_idx, int):  # RoBERTa / XLM-R positions start after the pad index
        limit -= padding_idx + 1
    if max_length > limit:
        raise UserError(
            f"--max-length {max_length} is longer than {name_or_path!r} accepts ({limit} "
            f"tokens); use --max-length {limit} or less"
        )


def load_model(
    name_or_path: str, mode: str, task_kind: str | None = None, allow_new_weights: bool = False
) -> tuple[Any, list[str]]:
    """A Hugging Face model for `mode`, and the names of weights it had to initialise."""
    if mode == "mlm":
        auto: Any = AutoModelForMaskedLM
    elif task_kind == "token":
        auto = AutoModelForTokenClassification
    else:
        auto = AutoModelForSequenceClassification
    try:
        with readable_weights(name_or_path):
            model, info = auto.from_pretrained(name_or_path, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise UserError(f"--teacher {name_or_path!r}: cannot load a {mode} model: {err}") from err
    missing = sorted(info.get("missing_keys", []))
    if missing and not allow_new_weights:
        raise UserError(
            f"--teacher {name_or_path!r} has no trained weights for {missing[:4]}"
            f"{' ...' if len(missing) > 4 else ''}: its {mode} head would be random. "
            "Train one first (kdcache teacher-adapt) or pick a teacher with that head."
        )
    return model.eval(), missing


def infer_task_kind(config: Any) -> str:
    """'token' for the config of a token-classification checkpoint, else 'sequence'."""
    archs = config.architectures or []
    return "token" if any(a.endswith("ForTokenClassification") for a in archs) else "sequence"


@contextlib.contextmanager
def hidden_at(model: Any, batch_index: torch.Tensor, positions: torch.Tensor) -> Iterator[None]:
    """While active, ``model.base_model`` returns only the rows (batch_index, positions) of its
    last hidden state, as (1, P, H): the model's own head then runs on those P rows only."""

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        output["last_hidden_state"] = output[0][batch_index, positions].unsqueeze(0)
        return output

    handle = model.base_model.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def mlm_logits_at(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    batch_index: torch.Tensor,
    positions: torch.Tensor,
    head_at_positions: bool,
) -> torch.Tensor:
    """(P, V) MLM logits at rows (batch_index, positions) of a (B, L) batch: the head run on
    those rows only (`head_at_positions`, see `head_split_holds`) or on all rows, gathered after.
    Differentiable: teacher adaptation trains through it."""
    if head_at_positions:
        with hidden_at(model, batch_index, positions):
            return model(input_ids=input_ids, attention_mask=attention_mask).logits[0]
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return logits[batch_index, positions]


@dataclass
class Teacher:
    """A loaded teacher on its device; `logits_at` is its only forward entry point."""

    name: str
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any
    mode: str
    task_kind: str | None
    device: torch.device
    dtype: torch.dtype
    weights_hash: str
    tok_hash: str
    head_at_positions: bool

    @property
    def num_classes(self) -> int:
        return len(self.label_names) if self.mode == "task" else int(self.model.config.vocab_size)

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[0])

    @property
    def label_names(self) -> tuple[str, ...]:
        if self.mode != "task":
            return ()
        id2label = self.model.config.id2label
        return tuple(str(id2label[i]) for i in range(len(id2label)))

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16/fp16 autocast on the teacher's device, or nothing for fp32."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def logits_at(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        batch_index: torch.Tensor,
        positions: torch.Tensor,
        head_at_positions: bool | None = None,
    ) -> torch.Tensor:
        """(P, C) logits at rows (batch_index, positions) of a (B, L) batch, in model dtype.

        C is the vocabulary (mlm) or the label space (task). Sequence classification ignores
        `positions` (its one labelled position is index 0 of each row).
        """
        split = self.head_at_positions if head_at_positions is None else head_at_positions
        with torch.inference_mode(), self.autocast():
            if self.mode == "mlm":
                args = (input_ids, attention_mask, batch_index, positions)
                return mlm_logits_at(self.model, *args, head_at_positions=split)
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
            if self.task_kind == "sequence":
                return logits[batch_index]
            return logits[batch_index, positions]


def head_split_holds(model: Any, vocab_size: int, device: torch.device) -> bool:
    """True when head-at-positions logits match full logits (fp32, `model` in eval mode) on a
    seeded probe batch."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, min(vocab_size, 1000), (2, 7), generator=gen).to(device)
    mask = torch.ones_like(ids)
    b = torch.tensor([0, 0, 1, 1], device=device)
    p = torch.tensor([1, 5, 0, 6], device=device)
    try:
        with torch.inference_mode():
            full = mlm_logits_at(model, ids, mask, b, p, head_at_positions=False)
            part = mlm_logits_at(model, ids, mask, b, p, head_at_positions=True)
    except (RuntimeError, TypeError, KeyError, IndexError):
        return False
    scale = float(full.abs().max()) + 1.0
    return part.shape == full.shape and bool(torch.allclose(part, full, atol=1e-4 * scale))


def load_teacher(
    name_or_path: str, mode: str = "mlm", device: str = "auto", dtype: str = "auto"
) -> Teacher:
    """Load tokenizer + model, hash both, move to the device and pick the forward strategy."""
    config = load_config(name_or_path, "--teacher")  # a damaged config.json named as such
    tokenizer = load_tokenizer(name_or_path)
    task_kind = infer_task_kind(config) if mode == "task" else None
    model, _ = load_model(name_or_path, mode, task_kind)
    check_tokenizer_fits(tokenizer, model.config.vocab_size, f"--teacher {name_or_path!r}")
    if mode == "mlm" and tokenizer.mask_token_id is None:
        raise UserError(f"--teacher {name_or_path!r}: its tokenizer has no mask token")
    dev = resolve_device(device)
    teacher = Teacher(
        name=name_or_path,
        model=model,
        tokenizer=tokenizer,
        mode=mode,
        task_kind=task_kind,
        device=dev,
        dtype=resolve_dtype(dtype, dev),
        weights_hash=teacher_hash(model),
        tok_hash=tokenizer_hash(tokenizer),
        head_at_positions=False,
    )
    model.to(dev)
    if mode == "mlm":
        teacher.head_at_positions = head_split_holds(model, teacher.vocab_size, dev)
        if not teacher.head_at_positions:
            log.warning(
                "%s: MLM head cannot run at positions only; using full logits", name_or_path
            )
    return teacher
