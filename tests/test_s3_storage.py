"""Tables and handover folders on S3, against a real S3-compatible server (SeaweedFS, ``tests/s3_support.py``).

What is checked: the table store round trip over boto3; a signed handover published to S3 verifies with
``synqa verify s3://...`` exactly as a local folder does, and one tampered object makes it fail naming that file;
publishing is all or nothing (a crash while staging leaves the previous pack readable and verifiable, a crash
while committing leaves the batch absent, never half-visible, and a re-run leaves no key of the old pack); and one
real Dagster run of a batch's tail (everything after generation) with ``SYNQA_STORAGE=s3://...``.
"""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest

from synqa_dagster.lineage.pack import MANIFEST_FILE, write_signed_pack
from synqa_dagster.lineage.verify import HandoverAbsent, verify_s3
from synqa_dagster.storage import S3Objects, TableStore
from synqa_dagster.handover.batch import handover_folders, write_rollup
from tests.test_lineage_verify import DATA_FILES, build_pack

BATCH = "2026-11-02"


def _frame(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame({"row_id": [f"r{i}" for i in range(n)], "text": [f"<script>alert({i})</script>" for i in range(n)]})


def _keys(s3_env, rel: str) -> list[str]:
    return S3Objects(s3_env["client"], s3_env["bucket"], s3_env["prefix"]).list(rel)


# ------------------------------------------------------------------------------------------------------ tables
def test_table_store_round_trip_on_s3(s3_env):
    store = TableStore(s3_env["base"], client=s3_env["client"])
    uri = store.write("accepted_dataset", "2026-11-02", _frame())
    assert uri == f"{s3_env['base']}/accepted_dataset/batch=2026-11-02/data.parquet"
    store.write("accepted_dataset", "2026-11-01", _frame(2))
    store.write("accepted_dataset", "2026-11-10", _frame(0))  # an empty batch is a table too
    store.write_bytes("accepted_dataset", "2026-11-02", b'{"a": 1}', "side.json")
    store.write("dedup_index", None, _frame(1))
    assert store.batches("accepted_dataset") == ["2026-11-01", "2026-11-02", "2026-11-10"]
    pd.testing.assert_frame_equal(store.read("accepted_dataset", "2026-11-02"), _frame())
    assert list(store.read("accepted_dataset", "2026-11-02", columns=["text"]).columns) == ["text"]
    assert len(store.read("accepted_dataset", "2026-11-10")) == 0 and len(store.read("dedup_index")) == 1
    assert store.read_bytes("accepted_dataset", "2026-11-02", "side.json") == b'{"a": 1}'
    assert store.exists("accepted_dataset", "2026-11-01") and not store.exists("accepted_dataset", "2026-11-03")
    with pytest.raises(FileNotFoundError, match="accepted_dataset.*2026-11-03"):
        store.read("accepted_dataset", "2026-11-03")
    # the same objects through the environment's client (what the CLI and summary use)
    assert len(TableStore(s3_env["base"]).read("accepted_dataset", "2026-11-01")) == 2
    assert store.delete("accepted_dataset", "2026-11-02") is True
    assert store.delete("accepted_dataset", "2026-11-02") is False
    assert store.batches("accepted_dataset") == ["2026-11-01", "2026-11-10"]
    assert not [k for k in _keys(s3_env, "accepted_dataset") if "2026-11-02" in k]  # side files went with it


# ---------------------------------------------------------------------------------------------------- handover
def _publish(s3_env, pack_folder, **kwargs) -> str:
    folders = handover_folders(f"{s3_env['base']}/handover", client=s3_env["client"])
    return folders.publish(pack_folder, pack_folder.name, **kwargs)


def test_a_handover_on_s3_verifies_and_a_tampered_object_is_named(s3_env, tmp_path, capsys):
    from synqa_dagster.cli import main as synqa

    pack = build_pack(tmp_path / "local")
    uri = _publish(s3_env, pack.folder)
    assert uri == f"{s3_env['base']}/handover/batch={pack.folder.name[len('batch='):]}"
    report = verify_s3(uri, pack.pub_path, client=s3_env["client"])
    assert report.ok, report.summary()
    assert report.merkle_root == pack.root and report.folder == uri
    assert synqa(["verify", uri, "--public-key", str(pack.pub_path)]) == 0  # batch taken from the URI's name
    assert "OK: " + uri in capsys.readouterr().out

    objects = S3Objects(s3_env["client"], s3_env["bucket"], f"{s3_env['prefix']}/handover/{pack.folder.name}")
    original = objects.get("accepted.jsonl")
    objects.put("accepted.jsonl", original.replace(b"Answer 1.", b"Answer 9.", 1))
    report = verify_s3(uri, pack.pub_path, client=s3_env["client"])
    assert not report.ok
    assert {p.file for p in report.problems if p.kind == "file_changed"} == {"accepted.jsonl"}, report.summary()
    assert synqa(["verify", uri]) == 1
    assert "accepted.jsonl" in capsys.readouterr().out

    objects.put("accepted.jsonl", original)
    objects.put("extra.txt", b"smuggled")
    report = verify_s3(uri, pack.pub_path, client=s3_env["client"])
    assert [(p.kind, p.file) for p in report.problems] == [("unsigned_file", "extra.txt")]

    objects.delete([MANIFEST_FILE])  # a folder without its manifest is absent, not "unsigned"
    with pytest.raises(HandoverAbsent, match=MANIFEST_FILE):
        verify_s3(uri, client=s3_env["client"])
    assert synqa(["verify", uri]) == 2


def _second_pack(tmp_path, first):
    """Another signed pack for the same batch (other key, so another manifest) without first's extra file."""
    return build_pack(tmp_path / "second", batch=first.folder.name[len("batch="):])


def test_publishing_is_all_or_nothing_and_leaves_no_stale_keys(s3_env, tmp_path, monkeypatch):
    first = build_pack(tmp_path / "first")
    (first.folder / "old_only.json").write_text("{}")  # a file the next version will not have
    write_signed_pack(first.folder, batch=first.folder.name[len("batch="):], records=first.records,
                      data_files=[*DATA_FILES, "old_only.json"], predicate={}, key=first.key)
    uri = _publish(s3_env, first.folder)
    name = first.folder.name
    before = _keys(s3_env, f"handover/{name}")
    assert "old_only.json" in before and verify_s3(uri, client=s3_env["client"]).ok

    # 1. a crash while staging: the published pack is untouched and still verifies; nothing new is visible
    second = _second_pack(tmp_path, first)
    real_put, staged = S3Objects.put, []

    def crashing_put(self, rel, data):
        if "/.staging/" in f"/{self.key(rel)}" and len(staged) >= 3:
            raise ConnectionError("network gone while staging")
        staged.append(rel)
        return real_put(self, rel, data)

    monkeypatch.setattr(S3Objects, "put", crashing_put)
    with pytest.raises(ConnectionError):
        _publish(s3_env, second.folder)
    monkeypatch.setattr(S3Objects, "put", real_put)
    assert len(staged) == 3
    assert _keys(s3_env, f"handover/{name}") == before
    report = verify_s3(uri, first.pub_path, client=s3_env["client"])
    assert report.ok and report.key_id == first.key.key_id, report.summary()
    assert not _keys(s3_env, "handover/.staging")  # the failed staging was cleaned up

    # 2. a crash while committing: the batch reads as absent (no manifest), never as a mix of old and new
    second = _second_pack(tmp_path / "again", first)
    real_copy, copied = S3Objects.copy, []

    def crashing_copy(self, src, dst):
        if len(copied) >= 2:
            raise ConnectionError("network gone while committing")
        copied.append(dst)
        return real_copy(self, src, dst)

    monkeypatch.setattr(S3Objects, "copy", crashing_copy)
    with pytest.raises(ConnectionError):
        _publish(s3_env, second.folder)
    monkeypatch.setattr(S3Objects, "copy", real_copy)
    with pytest.raises(HandoverAbsent):
        verify_s3(uri, client=s3_env["client"])
    assert handover_folders(f"{s3_env['base']}/handover", client=s3_env["client"]).names() == []
    assert write_rollup(handover_folders(f"{s3_env['base']}/handover", client=s3_env["client"]), "x", "mit") is None

    # 3. re-running the batch commits the new pack whole: it verifies, and no key of the old pack is left
    third = _second_pack(tmp_path / "third", first)
    files = sorted(p.name for p in third.folder.iterdir())
    _publish(s3_env, third.folder)
    report = verify_s3(uri, third.pub_path, client=s3_env["client"])
    assert report.ok and report.key_id == third.key.key_id, report.summary()
    assert _keys(s3_env, f"handover/{name}") == files and "old_only.json" not in files
    assert not _keys(s3_env, "handover/.staging")  # the crashed commit's staging went too


# ------------------------------------------------------------------------------------------- a real Dagster run
def test_the_batch_tail_runs_on_s3_and_ships_a_verifiable_handover(s3_env, tmp_path, monkeypatch, repo_root):
    from synqa_dagster.definitions import build_definitions
    from synqa_dagster.resources.storage import S3Resource
    from tests.conftest import write_recipe
    from tests.test_findings_once import _candidates

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    base = s3_env["base"]
    for key, value in {"DAGSTER_HOME": home, "SYNQA_HOME": tmp_path / "synqa_home", "SYNQA_STORAGE": base}.items():
        monkeypatch.setenv(key, str(value))
    defs = build_definitions(str(write_recipe(tmp_path / "r.yaml")), review_store_url=f"sqlite:///{tmp_path / 'review.db'}")
    store_resource = defs.resources["store"]
    assert isinstance(store_resource.s3, S3Resource)  # the S3 setting wired dagster-aws's resource
    TableStore(base).write("generated_candidates", BATCH, _candidates(repo_root))
    with dg.instance_for_test() as instance:
        selection = dg.AssetSelection.all() - dg.AssetSelection.assets("generated_candidates")
        result = dg.materialize([*defs.assets, *defs.asset_checks], selection=selection, partition_key=BATCH,
                                resources=defs.resources, instance=instance, raise_on_error=False)
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert {"accepted_dataset", "handover_pack", "dataset_card"} <= materialized, \
            [e.message for e in result.all_events if e.is_failure]
        uri = f"{base}/handover/batch={BATCH}"
        report = verify_s3(uri, expected_batch=BATCH)
        assert report.ok, report.summary()
        tables = TableStore(base)
        assert tables.exists("accepted_dataset", BATCH) and tables.exists("reject_log", BATCH)
        assert not (tmp_path / "synqa_home" / "handover").exists()  # nothing of the handover stayed local
        batches = json.loads(S3Objects.from_uri(f"{base}/handover").get("batches.json"))
        assert [b["batch"] for b in batches] == [BATCH] and batches[0]["merkle_root"] == report.merkle_root

        # the real writer crashing mid-staging: the shipped pack stays whole and verifiable
        real_put = S3Objects.put
        count = []

        def crashing_put(self, rel, data):
            if "/.runs/" in f"/{self.key(rel)}" and "/handover/" in f"/{self.key(rel)}":  # the run's staged pack
                count.append(rel)
                if len(count) > 4:
                    raise ConnectionError("network gone while staging")
            return real_put(self, rel, data)

        monkeypatch.setattr(S3Objects, "put", crashing_put)
        again = dg.materialize([*defs.assets, *defs.asset_checks], selection=dg.AssetSelection.assets("handover_pack"),
                               partition_key=BATCH, resources=defs.resources, instance=instance, raise_on_error=False)
        monkeypatch.setattr(S3Objects, "put", real_put)
        assert not again.success and len(count) == 5
        after = verify_s3(uri, expected_batch=BATCH)
        assert after.ok and after.merkle_root == report.merkle_root, after.summary()
        assert not _keys(s3_env, "handover/.runs") and not _keys(s3_env, ".runs")  # the failed run's staging went


def test_dagster_tables_go_through_the_s3_resource(s3_env, tmp_path, monkeypatch, repo_root):
    """The IO manager and the store resource read and write S3 through dagster-aws's S3Resource (a short run:
    seed corpus and the first two gates over a stored candidates table)."""
    from synqa_dagster.definitions import build_definitions
    from synqa_dagster.resources.storage import S3Resource
    from tests.conftest import write_recipe
    from tests.test_findings_once import _candidates

    base = s3_env["base"]
    monkeypatch.setenv("SYNQA_HOME", str(tmp_path / "synqa_home"))
    defs = build_definitions(str(write_recipe(tmp_path / "r.yaml")), storage_base=base)
    io_manager, store_resource = defs.resources["parquet_io_manager"], defs.resources["store"]
    assert isinstance(io_manager.s3, S3Resource) and isinstance(store_resource.s3, S3Resource)
    assert store_resource.handover_location() == f"{base}/handover"
    local = build_definitions(str(write_recipe(tmp_path / "r2.yaml")), storage_base=str(tmp_path / "storage"))
    assert local.resources["store"].s3 is None  # local storage needs no S3 at all
    TableStore(base).write("generated_candidates", BATCH, _candidates(repo_root))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong-key")  # resolved from the EnvVar at run time: the run fails
    with dg.instance_for_test() as instance:
        selection = dg.AssetSelection.assets("seed_corpus", "pii_gate", "quality_gate", "dedup_gate")
        denied = dg.materialize([*defs.assets, *defs.asset_checks], selection=selection, partition_key=BATCH,
                                resources=defs.resources, instance=instance, raise_on_error=False)
        assert not denied.success
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_env["server"].access_key)
        result = dg.materialize([*defs.assets, *defs.asset_checks], selection=selection, partition_key=BATCH,
                                resources=defs.resources, instance=instance, raise_on_error=False)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        paths = {e.asset_key.to_user_string(): e.materialization.metadata["path"].value
                 for e in result.get_asset_materialization_events()}
    assert paths["dedup_gate"] == f"{base}/dedup_gate/batch={BATCH}/data.parquet"
    tables = TableStore(base, client=s3_env["client"])
    assert len(tables.read("dedup_gate", BATCH)) == len(tables.read("quality_gate", BATCH).query("kept"))
    assert not (tmp_path / "storage").exists()
