"""A deleted corpus group (`rm -rf STORE/corpora/task`) is a lost corpus, not a silently smaller
store: the root's create-once record `kdcache_corpus.<name>.json` outlives the group, so
`kdcache verify` names the corpus and its source, inspect lists it, readers refuse it (and any
selection covering it) while the other corpora read, and a rerun of precompute computes it again.
Stores written before these records verify as before, with a note. Run on the local folder and
memory:// (as `store_damage.StoreDamageConformance`), and on a real precomputed store."""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from pathlib import Path

import pytest
from cli_calls import kdcache
from store_backend import Backend
from synthetic import sequence_spec, synthetic_meta, synthetic_specs, write_synthetic
from teacher_fixtures import precompute_args, precompute_inputs

from logit_store import StoreCorruptError, create_store, open_store
from logit_store.arrays import corpus_record_key, recorded_corpus
from logit_store.inspect import inspect_summary
from logit_store.verify import verify_store

RECORDS = ["kdcache_corpus.generic.json", "kdcache_corpus.task.json"]


def test_record_keys_round_trip_nested_names() -> None:
    assert corpus_record_key("task/atis") == "kdcache_corpus.task~atis.json"
    assert recorded_corpus("kdcache_corpus.task~atis.json") == "task/atis"
    assert recorded_corpus("kdcache_corpus.v1.2.json") == "v1.2"
    for other in ("kdcache.json", "zarr.json", "corpora", "kdcache_corpus..json"):
        assert recorded_corpus(other) is None


class LostCorpusConformance:
    def test_each_corpus_leaves_a_root_record(self, backend: Backend) -> None:
        url = backend.written()
        keys = backend.keys(url)
        assert [k for k in keys if k.startswith("kdcache_corpus.")] == RECORDS
        assert json.loads(backend.read(url, RECORDS[1])) == {
            "name": "task",
            "source": "synthetic:task",
        }
        store = open_store(url)
        assert store.recorded_corpora == ["generic", "task"] and store.lost_corpora == []
        assert verify_store(url) == []

    def test_a_deleted_corpus_group_is_named_and_a_rerun_restores_it(
        self, backend: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
    ) -> None:
        url = backend.copy()
        backend.delete(url, "corpora/task")
        lost = (
            f"store {url}: corpus 'task' is lost: its group corpora/task is gone (deleted?) but "
            "kdcache_corpus.task.json records it; rerun the precompute command that wrote the "
            "store with --corpus task=synthetic:task to compute it again"
        )
        faults = verify_store(url)
        assert len(faults) == 1 and faults[0].startswith(lost), faults
        code, out, _ = kdcache(monkeypatch, capsys, ["verify", url])
        assert code == 1 and f"FAULT {lost}" in out, out
        store = open_store(url)
        assert store.corpora == ["generic"] and store.lost_corpora == ["task"]
        assert not store.complete
        with pytest.raises(StoreCorruptError, match="^" + lost.replace("(", r"\(")[:60]):
            store["task"]
        with pytest.raises(StoreCorruptError, match="corpus 'task' is lost"):
            store.covering("task")
        assert len(store["generic"]) == 30 and store.covering("generic") == ["generic"]
        summary = inspect_summary(store)
        assert summary["lost_corpora"] == ["task"] and summary["complete"] is False
        code, out, _ = kdcache(monkeypatch, capsys, ["inspect", url])
        assert code == 0 and "lost       corpus 'task': its group is gone (deleted?)" in out
        write_synthetic(url)  # the rerun: only the lost corpus is computed
        assert verify_store(url) == [] and open_store(url).lost_corpora == []

    def test_a_store_without_records_verifies_as_before_with_a_note(
        self, backend: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
    ) -> None:
        url = backend.copy()
        for key in RECORDS:  # as an older kdcache wrote it
            backend.delete(url, key)
        assert verify_store(url) == [] and open_store(url).lost_corpora == []
        code, out, _ = kdcache(monkeypatch, capsys, ["verify", url])
        assert code == 0 and "OK store is complete and consistent" in out, out
        assert f"note: the root of {url} records no 'generic', 'task'" in out
        backend.delete(url, "corpora/task")  # undetectable there, as the note says
        assert verify_store(url) == []
        create_store(url, synthetic_meta(), synthetic_specs())  # a rerun records its corpora
        assert [k for k in backend.keys(url) if k.startswith("kdcache_corpus.")] == RECORDS
        assert any("corpus 'task': 5 of 5 units not written" in f for f in verify_store(url))
        write_synthetic(url)
        assert verify_store(url) == []

    def test_a_lost_sub_corpus_is_refused_where_its_parent_is_selected(
        self, backend: Backend
    ) -> None:
        url = backend.url("nested.zarr")
        specs = [
            sequence_spec(f"task/{name}", 8, 8, source=f"{name}.txt", source_hash=f"{i:064d}")
            for i, name in enumerate(("atis", "bbc"))
        ]
        create_store(url, synthetic_meta(), specs)
        assert "kdcache_corpus.task~atis.json" in backend.keys(url)
        backend.delete(url, "corpora/task/bbc")
        store = open_store(url)
        assert store.corpora == ["task/atis"] and store.lost_corpora == ["task/bbc"]
        with pytest.raises(StoreCorruptError, match=r"'task/bbc' is lost.*task/bbc=bbc\.txt"):
            store.covering("task")  # `--mix task=1` would otherwise read task/atis alone
        assert store.covering("task/atis") == ["task/atis"]

    def test_creators_of_different_corpora_keep_each_others_records(self, backend: Backend) -> None:
        url = backend.url("racing.zarr")
        meta, specs = synthetic_meta(), synthetic_specs()
        barrier = threading.Barrier(len(specs))
        errors: list[BaseException] = []

        def create(spec: object) -> None:
            barrier.wait()
            try:
                create_store(url, meta, [spec])  # type: ignore[list-item]
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=create, args=(spec,)) for spec in specs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        assert open_store(url).recorded_corpora == ["generic", "task"]


class TestLocalFolder(LostCorpusConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, tmp_path_factory: pytest.TempPathFactory) -> Backend:
        return Backend(str(tmp_path_factory.mktemp("stores")))


class TestMemory(LostCorpusConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> Backend:
        return Backend(f"memory://kdcache-{uuid.uuid4().hex}")


def test_a_precomputed_store_that_lost_a_corpus_fails_verify_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    files = precompute_inputs(tmp_path, n_generic=16, n_task=16)
    out = str(tmp_path / "store.zarr")
    args = precompute_args(files, out)
    code, _, err = kdcache(monkeypatch, capsys, args)
    assert code == 0, err
    code, _, _ = kdcache(monkeypatch, capsys, ["verify", out])
    assert code == 0
    shutil.rmtree(Path(out) / "corpora" / "task")  # rm -rf store.zarr/corpora/task
    code, stdout, _ = kdcache(monkeypatch, capsys, ["verify", out])
    faults = [line for line in stdout.splitlines() if line.startswith("FAULT")]
    assert code == 1 and len(faults) == 1, stdout
    assert faults[0].startswith(f"FAULT store {out}: corpus 'task' is lost: its group")
    assert f"--corpus task={files['task']} to compute it again" in faults[0]
    code, _, err = kdcache(monkeypatch, capsys, args)  # the remedy
    assert code == 0, err
    code, stdout, _ = kdcache(monkeypatch, capsys, ["verify", out])
    assert code == 0 and "OK store is complete and consistent" in stdout, stdout
