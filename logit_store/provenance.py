"""Identity of the tokenizer a store was written with (DESIGN §3: a wrong tokenizer must never
silently produce garbage targets). The writer records it; every reader that tokenizes compares."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from logit_store.errors import UserError


def tokenizer_hash(tokenizer: Any) -> str:
    """sha256 of a fast tokenizer's full JSON (vocab, normaliser, pre-tokenizer, template)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UserError(f"tokenizer {tokenizer.name_or_path!r} is not a fast tokenizer")
    state = json.dumps(json.loads(backend.to_str()), sort_keys=True)
    return hashlib.sha256(state.encode()).hexdigest()
