"""`kdcache inspect`: what a store holds, what it cost on disk, and how complete it is."""

from __future__ import annotations

from typing import Any

from logit_store.store import Store

POSITION_ARRAYS = ("positions", "masked_ids")


def _bytes(info: dict[str, Any], arrays: tuple[str, ...]) -> int:
    """Stored bytes of `arrays` over the done units (from their done records' manifests)."""
    return sum(int(info["bytes"].get(name, 0)) for name in arrays)


def inspect_summary(store: Store) -> dict[str, Any]:
    """A JSON-able summary: provenance, encoding, per-corpus sizes, bytes and completeness."""
    meta = store.meta
    target_arrays = ("target_ids", "id_table", *meta.target_encoding.stored_arrays())
    corpora = []
    lost = store.lost_corpora
    for name in store.corpora:
        c = store[name]
        info = c.info
        counts = info["counts"]
        positions = max(int(counts["positions"]), 1)
        target_bytes = _bytes(info, target_arrays)
        corpora.append(
            {
                "name": name,
                "source": info.get("source", ""),
                "sequences": int(counts["sequences"]),
                "tokens": int(counts["tokens"]),
                "labelled_positions": int(counts["positions"]),
                "units_done": len(c.done_units),
                "units_total": c.n_units,
                "complete": c.complete,
                "skipped": info.get("skipped", {}),
                "skip_examples": info.get("skip_examples", []),
                "target_bytes": target_bytes,
                "target_bytes_per_position": round(target_bytes / positions, 2),
                "position_bytes_per_position": round(
                    (_bytes(info, POSITION_ARRAYS) + target_bytes) / positions, 2
                ),
            }
        )
    return {
        "store": store.url,
        "format_version": meta.format_version,
        "tool_version": meta.tool_version,
        "teacher": {"id": meta.teacher_id, "hash": meta.teacher_hash},
        "tokenizer": {
            "id": meta.tokenizer_id,
            "hash": meta.tokenizer_hash,
            "vocab_size": meta.vocab_size,
        },
        "mode": meta.mode,
        "task_kind": meta.task_kind,
        "label_names": list(meta.label_names),
        "encoding": meta.encoding,
        **meta.target_encoding.summary(),
        "masking": meta.masking,
        "max_length": meta.max_length,
        "complete": all(c["complete"] for c in corpora) and not lost,
        "corpora": corpora,
        "lost_corpora": lost,  # recorded by the root, their group gone (`Store.lost_corpora`)
        "extra": meta.extra,
    }
