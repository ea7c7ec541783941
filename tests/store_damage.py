"""`StoreDamageConformance`: damage that the store's own logic names alike on every backend (a
stale or damaged summary, damaged identity objects and metadata, emptied or replaced objects, a
deleted done array), each named by `kdcache verify`, refused by readers, and its remedy
checked. `tests/test_store_backends.py` runs it on the local folder and ``memory://``; S3 on
moto keeps the object-level cases of `StoreConformance`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from cli_calls import kdcache
from store_backend import Backend
from synthetic import synthetic_meta, synthetic_specs, write_synthetic

from logit_store import StoreCorruptError, consolidate_store, create_store, open_store
from logit_store.verify import verify_store


class StoreDamageConformance:
    """Damage the store's own logic names the same on every backend (verify's checks, the
    readers' refusals, the remedies); the local folder and memory:// run them, S3 keeps the
    object-level cases of `StoreConformance` (a flipped byte, a deleted object)."""

    def test_an_emptied_object_is_named_by_verify_and_refused_by_readers(
        self, backend: Backend
    ) -> None:
        url = backend.copy()
        backend.write(url, "corpora/task/target_values/c/2/0", b"")
        faults = verify_store(url)
        assert any("unit 2: array 'target_values': its object has 0 bytes" in f for f in faults)
        task = open_store(url)["task"]
        start, stop = task.unit_ranges()[2]
        with pytest.raises(StoreCorruptError, match=r"unit 2: the stored object of array"):
            task.batch(list(range(start, stop)))
        assert open_store(url)["task"].batch([0]).targets.ids.shape[0] > 0  # other units read

    def test_a_replaced_object_fails_its_checksum(self, backend: Backend) -> None:
        url = backend.copy()
        unit_1 = backend.read(url, "corpora/task/input_ids/c/1")  # a valid shard of a unit
        backend.write(url, "corpora/task/input_ids/c/2", unit_1)
        faults = verify_store(url)
        assert any("unit 2: array 'input_ids'" in f for f in faults), faults
        assert not any("unit 1" in f for f in faults)

    def test_a_deleted_done_array_is_reported_and_a_resume_recreates_it(
        self, backend: Backend
    ) -> None:
        url = backend.copy()
        backend.delete(url, "corpora/task/done")
        assert any("corpus 'task'" in f for f in verify_store(url))
        writer = create_store(url, synthetic_meta(), synthetic_specs())  # the resume: no KeyError
        assert len(writer.pending("task")) == 5 and not writer.pending("generic")
        write_synthetic(url)
        assert verify_store(url) == []

    def test_damaged_metadata_and_flags_are_store_errors_not_tracebacks(
        self, backend: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
    ) -> None:
        url = backend.copy()
        records = "corpora/task/records/c/2"
        backend.write(url, records, backend.read(url, records)[:-3])
        with pytest.raises(StoreCorruptError, match="array 'records'"):
            open_store(url)["task"].column("text")
        done = "corpora/task/done/c/0"
        backend.write(url, done, backend.read(url, done)[:-1])
        with pytest.raises(StoreCorruptError, match="corpus 'task'"):
            open_store(url)["task"]
        assert any("corpus 'task'" in fault for fault in verify_store(url))
        backend.write(url, "corpora/generic/zarr.json", b"{not json")
        assert "metadata cannot be read" in verify_store(url)[0]
        backend.write(url, "zarr.json", b"{not json")
        code, _, err = kdcache(monkeypatch, capsys, ["inspect", url])
        assert code == 2 and "root metadata cannot be read" in err
        assert "Traceback" not in err

    @pytest.mark.parametrize("damage", ["deleted lengths", "garbled units", "changed count"])
    def test_a_damaged_or_stale_summary_is_named_by_verify(
        self,
        backend: Backend,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture,
        damage: str,
    ) -> None:
        """verify said OK for a damaged summary (readers fall back to the units); it names it
        and the remedy, which then works."""
        url = backend.copy()
        consolidate_store(url)
        if damage == "deleted lengths":
            backend.delete(url, "corpora/task/summary_lengths/c/0")
            want = "(unit 0: array 'summary_lengths' differs from the unit's lengths)"
        elif damage == "garbled units":
            (shard,) = backend.keys(url, "corpora/task/summary_units/c")
            data = bytearray(backend.read(url, shard))
            data[len(data) // 2] ^= 0xFF
            backend.write(url, shard, bytes(data))
            want = "is damaged (array 'summary_units'"
        else:
            units = zarr.open_array(f"{url}/corpora/task/summary_units", mode="r+")
            table = np.asarray(units[...])
            table[4, 3] += 1
            units[...] = table
            want = "(unit 4: sequences, tokens, positions"
        code, out, _ = kdcache(monkeypatch, capsys, ["verify", url])
        (line,) = [line for line in out.splitlines() if line.startswith("FAULT")]
        assert code == 1 and line.startswith("FAULT corpus 'task': its summary") and want in line
        assert "delete corpora/task/summary_units and rerun the precompute command" in line
        backend.delete(url, "corpora/task/summary_units")
        consolidate_store(url)  # what the precompute command's final step does
        assert verify_store(url) == []

    def test_damaged_identity_objects_are_named_by_verify_and_the_remedy_works(
        self, backend: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
    ) -> None:
        url = backend.copy()
        identity = "corpora/task/kdcache_identity.json"
        changed = {**json.loads(backend.read(url, identity)), "n_units": 9}
        backend.write(url, identity, json.dumps(changed).encode())
        backend.write(url, "kdcache.json", b"{not json")
        code, out, _ = kdcache(monkeypatch, capsys, ["verify", url])
        faults = [line for line in out.splitlines() if line.startswith("FAULT")]
        assert code == 1 and len(faults) == 2, out
        assert faults[0].startswith(f"FAULT store {url}: kdcache.json cannot be read (")
        assert f"write the attribute 'kdcache' of {url}/zarr.json" in faults[0]
        assert faults[1].startswith(f"FAULT store {url}: {identity} disagrees with the metadata")
        assert "on n_units" in faults[1]
        with pytest.raises(StoreCorruptError, match=r"kdcache\.json cannot be read .* recreate"):
            create_store(url, synthetic_meta(), synthetic_specs())  # the resume
        root = json.loads(backend.read(url, "zarr.json"))["attributes"]
        backend.write(url, "kdcache.json", json.dumps(root["kdcache"]).encode())
        task = json.loads(backend.read(url, "corpora/task/zarr.json"))["attributes"]
        ident = {k: task["kdcache_corpus"][k] for k in ("source_hash", "unit_size", "n_units")}
        backend.write(url, identity, json.dumps(ident).encode())
        assert verify_store(url) == []
        create_store(url, synthetic_meta(), synthetic_specs())
