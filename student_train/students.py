"""Student models: a named size preset, a config file, or a subset of the teacher's layers.

Every student is an `AutoModelForMaskedLM` of the teacher's architecture family over the
teacher's vocabulary (the store's), so its encoder loads with `AutoModel.from_pretrained` and the
finetuning side can reuse it. `SPEC` forms (``--student``):

* ``tiny`` (2 × 128), ``small`` (4 × 256), ``base`` (6 × 384, MiniLM-like): layers × hidden,
  built on the teacher's config (BertConfig when the teacher's config is not on disk);
* ``path/to/config.json``: either a Hugging Face config (has ``model_type``) or
  ``{"layers": L, "hidden": H, "heads": A, "intermediate": I}``;
* ``from-teacher:N`` (the first N teacher layers) or ``from-teacher:I,J,...`` (those layer
  indices, in order): DistilBERT-style init from the teacher at ``store.meta.teacher_id``,
  with its embeddings and MLM head.

The LM head is applied only at labelled positions (`teacher_infer.teacher.mlm_logits_at`):
(P, H) → (P, V) instead of (B, L, V), which is most of a small student's step at a 30k–250k
vocabulary.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    PretrainedConfig,
    PreTrainedModel,
)

from logit_store import StoreMeta, UserError, tokenizer_hash
from student_train.heads import quiet_transformers
from teacher_infer.teacher import check_tokenizer_fits, not_a_model, readable_weights

FROM_TEACHER = "from-teacher:"
_LAYER_KEY = re.compile(r"\.layer\.(\d+)\.")


@dataclass(frozen=True)
class StudentShape:
    """Encoder size: transformer layers, hidden width, attention heads, FFN width."""

    layers: int
    hidden: int
    heads: int
    intermediate: int

    def __post_init__(self) -> None:
        if min(self.layers, self.hidden, self.heads, self.intermediate) < 1:
            raise UserError(f"student shape {self}: every size must be >= 1")
        if self.hidden % self.heads:
            raise UserError(f"student hidden {self.hidden} is not divisible by heads {self.heads}")


PRESETS = {
    "tiny": StudentShape(layers=2, hidden=128, heads=2, intermediate=512),
    "small": StudentShape(layers=4, hidden=256, heads=4, intermediate=1024),
    "base": StudentShape(layers=6, hidden=384, heads=12, intermediate=1536),
}


def load_store_tokenizer(meta: StoreMeta) -> Any:
    """The store's tokenizer, checked against its hash and special-token ids.

    Returns None when `meta.tokenizer_id` is not a local folder (a hub name while offline):
    the student's vocabulary size is still checked against the store by `build_student`.
    """
    if not Path(meta.tokenizer_id).is_dir():
        return None
    tokenizer = AutoTokenizer.from_pretrained(meta.tokenizer_id)
    where = f"tokenizer {meta.tokenizer_id!r}"
    check_tokenizer_fits(tokenizer, meta.vocab_size, where)
    if tokenizer_hash(tokenizer) != meta.tokenizer_hash:
        raise UserError(
            f"{where} differs from the one the store was written with (tokenizer_hash); "
            "restore that tokenizer or recompute the store"
        )
    for name in ("pad_token_id", "mask_token_id", "cls_token_id", "sep_token_id"):
        stored = getattr(meta, name)
        if stored is not None and getattr(tokenizer, name) != stored:
            raise UserError(f"{where}: {name} {getattr(tokenizer, name)} != store's {stored}")
    return tokenizer


def _check_vocab(config: PretrainedConfig, meta: StoreMeta, spec: str) -> None:
    if config.vocab_size != meta.vocab_size:
        raise UserError(
            f"--student {spec}: vocab_size {config.vocab_size} != the store's {meta.vocab_size} "
            f"(tokenizer {meta.tokenizer_id!r}); a student must use the teacher's vocabulary"
        )


def _teacher_config(meta: StoreMeta) -> PretrainedConfig:
    if Path(meta.teacher_id).is_dir():
        return AutoConfig.from_pretrained(meta.teacher_id)
    return BertConfig(vocab_size=meta.vocab_size, pad_token_id=meta.pad_token_id)


def shaped_config(base: PretrainedConfig, shape: StudentShape, meta: StoreMeta) -> PretrainedConfig:
    """A copy of the teacher's config resized to `shape` over the store's vocabulary."""
    config = base.__class__.from_dict(base.to_dict())
    config.num_hidden_layers = shape.layers
    config.hidden_size = shape.hidden
    config.num_attention_heads = shape.heads
    config.intermediate_size = shape.intermediate
    config.vocab_size = meta.vocab_size
    config.pad_token_id = meta.pad_token_id
    return config


def _config_from_file(path: Path, meta: StoreMeta) -> PretrainedConfig:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"--student {path}: cannot read a JSON config: {err}") from err
    if "model_type" in data:
        data.setdefault("vocab_size", meta.vocab_size)
        return AutoConfig.for_model(data.pop("model_type"), **data)
    keys = {"layers", "hidden", "heads", "intermediate"}
    unknown = set(data) - keys - {"vocab_size"}
    if unknown or not keys <= set(data):
        raise UserError(
            f"--student {path}: expected keys {sorted(keys)} (or a Hugging Face config with "
            f"model_type); got {sorted(data)}"
        )
    config = shaped_config(_teacher_config(meta), StudentShape(**{k: data[k] for k in keys}), meta)
    config.vocab_size = data.get("vocab_size", meta.vocab_size)
    return config


def parse_teacher_layers(spec: str, n_teacher_layers: int) -> tuple[int, ...]:
    """``from-teacher:N`` → (0..N-1); ``from-teacher:I,J`` → (I, J). Validated."""
    body = spec[len(FROM_TEACHER) :]
    try:
        parts = [int(p) for p in body.split(",") if p.strip()]
    except ValueError as err:
        raise UserError(f"--student {spec}: expected {FROM_TEACHER}N or {FROM_TEACHER}I,J") from err
    layers = tuple(range(parts[0])) if len(parts) == 1 and "," not in body else tuple(parts)
    if not layers or len(set(layers)) != len(layers):
        raise UserError(f"--student {spec}: need at least one layer, each at most once")
    if min(layers) < 0 or max(layers) >= n_teacher_layers:
        raise UserError(f"--student {spec}: the teacher has layers 0..{n_teacher_layers - 1}")
    return layers


def _from_teacher(spec: str, meta: StoreMeta) -> PreTrainedModel:
    problem = not_a_model(meta.teacher_id, f"--student {spec}: the store's teacher")
    if problem is not None:
        raise problem
    try:
        with readable_weights(meta.teacher_id):
            teacher, info = AutoModelForMaskedLM.from_pretrained(
                meta.teacher_id, output_loading_info=True
            )
    except (OSError, ValueError) as err:
        raise UserError(
            f"--student {spec}: cannot load the teacher {meta.teacher_id!r}: {err}"
        ) from err
    if info.get("missing_keys"):
        raise UserError(
            f"--student {spec}: the teacher {meta.teacher_id!r} has no trained MLM head "
            f"({sorted(info['missing_keys'])[:3]}); use the adapted teacher the store was made with"
        )
    _check_vocab(teacher.config, meta, spec)
    layers = parse_teacher_layers(spec, teacher.config.num_hidden_layers)
    config = teacher.config.__class__.from_dict(teacher.config.to_dict())
    config.num_hidden_layers = len(layers)
    new_index = {old: new for new, old in enumerate(layers)}
    state: dict[str, torch.Tensor] = {}
    for key, value in teacher.state_dict().items():
        match = _LAYER_KEY.search(key)
        if match is None:
            state[key] = value
        elif int(match.group(1)) in new_index:
            renamed = f".layer.{new_index[int(match.group(1))]}."
            state[key[: match.start()] + renamed + key[match.end() :]] = value
    return model_with_weights(type(teacher), config, state).train()


def model_with_weights(
    cls: type[PreTrainedModel],
    config: PretrainedConfig,
    state: dict[str, torch.Tensor],
    copy: bool = True,
) -> PreTrainedModel:
    """`cls(config)` holding exactly the weights `state` (every key of the model; tied weights
    tied), as `cls._from_config(config)` + `load_state_dict(state, strict=True)` would give,
    without the random init those weights overwrite (~0.2 s for a 15M-parameter student):
    `from_pretrained` builds on the meta device and loads `state` there. With copy=False the
    model holds `state`'s tensors themselves (for a model that is only saved). In eval mode,
    like `from_pretrained`; the torch RNG is not drawn from."""
    copies: dict[tuple[Any, ...], torch.Tensor] = {}  # tied: one copy under both keys
    owned = {}
    for key, value in state.items():
        same = (value.data_ptr(), value.dtype, tuple(value.shape), value.stride())
        if same not in copies:
            copies[same] = value.detach().clone() if copy else value
        owned[key] = copies[same]
    with quiet_transformers():  # the load report: nothing missing or unexpected is checked below
        loaded: Any = cls.from_pretrained(
            None, config=config, state_dict=owned, dtype=config.dtype, output_loading_info=True
        )
    model, info = loaded
    problems = {name: sorted(keys) for name, keys in info.items() if keys}
    if problems:
        raise RuntimeError(f"{cls.__name__}: weights do not fit the model: {problems}")
    return model


def build_student(spec: str, meta: StoreMeta, seed: int = 0) -> PreTrainedModel:
    """The student for `spec` (module docstring), randomly initialised from `seed` where new."""
    if meta.mode != "mlm":
        raise UserError(f"store mode is {meta.mode!r}: distillation needs an mlm-mode store")
    torch.manual_seed(seed)
    if spec.startswith(FROM_TEACHER):
        return _from_teacher(spec, meta)
    if spec in PRESETS:
        config = shaped_config(_teacher_config(meta), PRESETS[spec], meta)
    elif spec.endswith(".json"):
        config = _config_from_file(Path(spec), meta)
    else:
        raise UserError(
            f"--student {spec!r}: use a preset ({', '.join(PRESETS)}), a config .json, "
            f"or {FROM_TEACHER}N / {FROM_TEACHER}I,J"
        )
    _check_vocab(config, meta, spec)
    return AutoModelForMaskedLM.from_config(config)


def save_student(model: PreTrainedModel, tokenizer: Any, folder: Path) -> None:
    """A Hugging Face folder (safetensors): `AutoModel(ForMaskedLM).from_pretrained` loads it."""
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
