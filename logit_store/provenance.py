"""Identity of the tokenizer a store was written with (DESIGN §3: a wrong tokenizer must never
silently produce garbage targets). The writer records it; every reader that tokenizes compares."""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from logit_store.errors import UserError

_KNOWN_STATES = 16  # tokenizer states whose hash is remembered (a sweep hashes one or two)
_hashes: dict[bytes, str] = {}  # sha256 of the backend's own JSON -> tokenizer_hash
_hashes_lock = threading.Lock()


def _canonical_hash(state: str) -> str:
    return hashlib.sha256(json.dumps(json.loads(state), sort_keys=True).encode()).hexdigest()


def tokenizer_hash(tokenizer: Any) -> str:
    """sha256 of a fast tokenizer's full JSON (vocab, normaliser, pre-tokenizer, template).

    The JSON is re-serialised with sorted keys (the backend's key order is not a promise);
    that costs ~80 ms at a 30k vocabulary, so the result is remembered per exact backend JSON
    (keyed by its sha256): a tokenizer loaded again, or one changed since (added tokens,
    truncation), is serialised anew and only identical states share a hash."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UserError(f"tokenizer {tokenizer.name_or_path!r} is not a fast tokenizer")
    state = backend.to_str()
    key = hashlib.sha256(state.encode()).digest()
    with _hashes_lock:
        found = _hashes.get(key)
    if found is None:
        found = _canonical_hash(state)
        with _hashes_lock:
            while len(_hashes) >= _KNOWN_STATES:
                del _hashes[next(iter(_hashes))]
            _hashes[key] = found
    return found
