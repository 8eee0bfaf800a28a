"""A batch end to end on a real Dagster instance with the real tiny LLM (SmolLM2-135M via llama.cpp).

One module-scoped run of the whole job (2 seeds, short completions) is shared by the assertions below; a second
generation of the same batch checks byte-identical determinism, and a recipe change checks staleness.
"""

import json
import os
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from synqa_dagster.batches import latest_batch_versions, stale_batches
from synqa_dagster.config import load_recipe
from synqa_dagster.definitions import BATCH_JOB, build_definitions
from synqa_dagster.generation.pipeline import CANDIDATE_COLUMNS
from synqa_dagster.lineage.canonical import canonical_json
from tests.test_card import assert_card_states_rejects
from synqa_dagster.stages import STAGES, batch_tables, gate_assets, gate_names
from synqa_dagster.storage import TableStore
from tests.conftest import REPO_ROOT, TINY, write_recipe

BATCH = "2026-11-02"


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    home = tmp / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {"DAGSTER_HOME": str(home), "SYNQA_STORAGE": str(tmp / "storage"), "SYNQA_HOME": str(tmp / "synqa_home")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    recipe_path = write_recipe(tmp / "tiny.yaml", **TINY)
    defs = build_definitions(str(recipe_path))
    instance = dg.DagsterInstance.get()
    result = defs.resolve_job_def(BATCH_JOB).execute_in_process(partition_key=BATCH, instance=instance, raise_on_error=False)
    yield {"tmp": tmp, "defs": defs, "instance": instance, "result": result, "recipe_path": recipe_path, "store": TableStore(env["SYNQA_STORAGE"])}
    instance.dispose()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_the_batch_materializes_every_asset_and_passes_its_checks(batch_run):
    result = batch_run["result"]
    failures = [e.message for e in result.all_events if e.is_failure]
    assert result.success, failures
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {
        "seed_corpus", "generated_candidates", *gate_assets().values(), *batch_tables(), "reference_corpus",
        "handover_pack", "dataset_card",
    }
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["every_candidate_accounted_once"] is True
    assert checks["no_eval_ngram_in_accepted"] is True
    assert "toxicity_slice_escalation" in checks
    assert {"distribution_drift", "diversity_collapse", "intent_coverage"} <= set(checks)


def test_candidates_carry_lineage_from_real_generation(batch_run):
    store: TableStore = batch_run["store"]
    rows = store.read("generated_candidates", BATCH)
    assert list(rows.columns) == CANDIDATE_COLUMNS
    assert set(rows["technique"]) == {"self_instruct", "evol_instruct", "magpie_single_turn", "magpie_multi_turn"}
    assert rows["row_id"].is_unique and rows["seed_id"].nunique() == 2
    assert rows["generator_version"].str.match(r"^sha256:[0-9a-f]{64}$").all()
    assert (rows["batch"] == BATCH).all() and (rows["created_at"] == "2026-11-02T00:00:00+00:00").all()
    recipe = load_recipe(batch_run["recipe_path"])
    assert (rows["recipe_hash"] == recipe.content_hash()).all()
    sampling = json.loads(rows["sampling"].iloc[0])
    assert sampling["max_new_tokens"] == TINY["generator.sampling.max_new_tokens"] and "seed" in sampling
    for row in rows.itertuples():  # n_turns is what the stored conversation holds, whatever the model wrote
        turns = json.loads(row.conversation)
        assert row.n_turns == sum(t["role"] == "user" for t in turns) >= 1, row.row_id
    multi = rows[rows["technique"] == "magpie_multi_turn"]
    assert len(multi) and (multi["n_turns"] <= recipe.techniques.magpie.n_turns).all()
    assert rows["text"].str.len().gt(0).all()


def test_reject_log_and_accepted_split_account_for_every_candidate(batch_run):
    store: TableStore = batch_run["store"]
    candidates = store.read("generated_candidates", BATCH)
    accepted = store.read("accepted_dataset", BATCH)
    rejected = store.read("reject_log", BATCH)
    assert len(accepted) + len(rejected) == len(candidates)
    assert set(accepted["row_id"]).isdisjoint(rejected["row_id"])
    assert rejected["reject_reason"].notna().all() and rejected["reject_reason"].str.len().gt(5).all()
    assert {"seed_id", "technique", "generator_id", "prompt_template_id", "gate", "gate_score"} <= set(rejected.columns)
    assert {"score_quality", "score_dedup", "score_toxicity", "score_contamination"} <= set(accepted.columns)
    index = store.read("dedup_index", BATCH)
    assert sorted(index["row_id"]) == sorted(accepted["row_id"])


def test_metadata_tells_the_story_in_the_ui(batch_run):
    instance = batch_run["instance"]
    for asset in ("generated_candidates", "quality_gate", "accepted_dataset"):
        record = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records[0]
        meta = record.asset_materialization.metadata
        assert {"dagster/row_count", "preview", "seconds", "recipe_hash"} <= set(meta)
    funnel = instance.fetch_materializations(dg.AssetKey("accepted_dataset"), limit=1).records[0].asset_materialization.metadata["funnel"]
    assert "candidates →" in funnel.value and "contamination" in funnel.value


def test_same_batch_same_recipe_gives_byte_identical_rows(batch_run, tmp_path):
    from synqa_dagster.generation.runner import run_in_subprocess

    store: TableStore = batch_run["store"]
    seeds = store.read("seed_corpus", BATCH)
    recipe = load_recipe(batch_run["recipe_path"])
    from synqa_dagster.generation.seeds import select_seeds

    chosen = select_seeds(seeds, BATCH, recipe.seed_corpus.seeds_per_batch, salt=recipe.generator.seed)
    again, _ = run_in_subprocess(recipe, chosen, BATCH, "2026-11-02T00:00:00+00:00", tmp_path / "cache", log=lambda _: None)
    first = store.read("generated_candidates", BATCH)
    pd.testing.assert_frame_equal(first, again)
    again_uri = TableStore(str(tmp_path / "s")).write("generated_candidates", BATCH, again)
    assert Path(again_uri).read_bytes() == Path(store.uri("generated_candidates", BATCH)).read_bytes()


def test_a_recipe_change_makes_the_batch_stale(batch_run):
    instance = batch_run["instance"]
    old = load_recipe(batch_run["recipe_path"])
    versions = latest_batch_versions(instance)
    assert versions[BATCH].recipe_hash == old.content_hash()
    assert stale_batches(instance, old.content_hash()) == []
    changed = write_recipe(batch_run["tmp"] / "changed.yaml", **{**TINY, "generator.sampling.temperature": 0.2})
    new_hash = load_recipe(changed).content_hash()
    assert new_hash != old.content_hash()
    assert [b.batch for b in stale_batches(instance, new_hash)] == [BATCH]
    new_defs = build_definitions(str(changed))
    assert new_defs.resolve_assets_def("generated_candidates").code_versions_by_key[dg.AssetKey("generated_candidates")] == new_hash
    # the sensor requests exactly one rebuild of the stale batch, keyed by batch and recipe
    sensor = new_defs.resolve_sensor_def("stale_batches_sensor")
    requests = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=new_defs)).run_requests
    assert [(r.partition_key, r.run_key) for r in requests] == [(BATCH, f"{BATCH}@{new_hash}")]


# ------------------------------------------------------------------------------ handover pack (same real batch)


def _folder(batch_run) -> Path:
    return batch_run["tmp"] / "synqa_home" / "handover" / f"batch={BATCH}"


def test_the_batch_ends_in_a_handover_folder_that_verifies(batch_run):
    from synqa_dagster.lineage.verify import verify_pack

    folder = _folder(batch_run)
    report = verify_pack(folder, expected_batch=BATCH)
    assert report.ok, report.summary()
    names = {p.name for p in folder.iterdir()}
    assert {"README.md", "accepted.jsonl", "rejected.jsonl", "lineage.jsonl", "lineage.proofs.jsonl", "manifest.dsse.json",
            "signing_key.pub", "recipe.yaml", "gates.yaml", "seed_corpus.json", "review.json", "drift.json", "funnel.png",
            "funnel.md"} <= names
    # the configs that ran, byte for byte
    assert (folder / "recipe.yaml").read_bytes() == Path(batch_run["recipe_path"]).read_bytes()
    assert (folder / "gates.yaml").read_bytes() == (REPO_ROOT / "gates" / "default.yaml").read_bytes()
    assert (folder / "funnel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every candidate has a lineage record (rejects too), with every gate and the generator named
    store: TableStore = batch_run["store"]
    candidates = store.read("generated_candidates", BATCH)
    records = [json.loads(line) for line in (folder / "lineage.jsonl").read_text().splitlines()]
    assert sorted(r["row_id"] for r in records) == sorted(candidates["row_id"])
    assert all(set(r["gates"]) == set(gate_names()) for r in records)  # every gate of the registry (JCS sorts keys)
    assert {r["generator"]["version"] for r in records} == set(candidates["generator_version"])
    # the roll-up card lists the batch
    rollup = (folder.parent / "README.md").read_text()
    assert BATCH in rollup


def test_the_card_parses_and_states_the_real_numbers_of_its_batch(batch_run):
    from huggingface_hub import DatasetCard

    folder = _folder(batch_run)
    store: TableStore = batch_run["store"]
    accepted = store.read("accepted_dataset", BATCH)
    rejected = store.read("reject_log", BATCH)
    card = DatasetCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert "synthetic" in data["tags"]
    lines = (folder / "accepted.jsonl").read_text().splitlines()
    assert len(lines) == len(accepted)
    text = card.text
    manifest = json.loads((folder / "manifest.dsse.json").read_text())
    import base64
    statement = json.loads(base64.b64decode(manifest["payload"]))
    assert statement["predicate"]["merkle_root"] in text and statement["predicate"]["key_id"] in text
    public_pem = (folder / "signing_key.pub").read_text().strip()
    assert public_pem in text  # the card names who signed
    assert (data["synqa"]["candidates"], data["synqa"]["accepted"], data["synqa"]["rejected"]) == (
        len(accepted) + len(rejected), len(accepted), len(rejected))
    assert_card_states_rejects(text, rejected)  # per gate and category, escaped as the card writes them
    assert "humaneval" in text and "13" in text  # the eval set checked and its n-gram size


def test_the_signing_key_never_appears_in_any_written_file(batch_run):
    key_file = batch_run["tmp"] / "synqa_home" / "keys" / "signing_ed25519.pem"
    assert key_file.stat().st_mode & 0o077 == 0
    pem = key_file.read_bytes()
    body = b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))
    from cryptography.hazmat.primitives import serialization

    raw = serialization.load_pem_private_key(pem, None).private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    needles = [body, raw, raw.hex().encode(), __import__("base64").b64encode(raw)]
    roots = [batch_run["tmp"]]
    leaked = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and path != key_file and not path.is_symlink():
                data = path.read_bytes()
                leaked += [str(path) for n in needles if n in data]
    assert leaked == []


def test_synqa_verify_accepts_the_demo_folder_and_names_an_edited_row(batch_run, tmp_path, capsys):
    import shutil

    from synqa_dagster.cli import main

    folder = _folder(batch_run)
    assert main(["verify", str(folder), "--batch", BATCH]) == 0
    assert "OK" in capsys.readouterr().out.upper()
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    name = "accepted.jsonl" if (copy / "accepted.jsonl").read_text().strip() else "rejected.jsonl"
    lines = (copy / name).read_text().splitlines(keepends=True)
    row = json.loads(lines[0])
    row["response"] = f"{row['response'] or ''} [edited]"  # one field of one row, whatever the model wrote
    lines[0] = canonical_json(row).decode("utf-8") + "\n"
    (copy / name).write_text("".join(lines))
    assert main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert row["row_id"] in out and name in out
    assert main(["verify", str(tmp_path / "missing")]) == 2


# ------------------------------------------------- human review in a real browser, flowing back through the sensor


@pytest.mark.browser
def test_a_reviewer_rejects_a_row_in_the_browser_and_the_decision_changes_what_ships(batch_run):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from synqa_dagster.definitions import REVIEW_JOB
    from synqa_dagster.lineage.verify import verify_pack
    from tests.browser_support import chromium_driver, start_review_server
    from tests.test_review_browser import press, sign_in

    defs, instance, store_tables = batch_run["defs"], batch_run["instance"], batch_run["store"]
    resource = defs.resources["review_store"]
    store, reviewer_hash = resource.store(), resource.reviewer_hash()
    sample = store_tables.read("review_queue", BATCH)
    funnel = {s.name: int(store_tables.read(s.asset, BATCH)["kept"].sum()) for s in STAGES if s.automatic}
    assert len(sample), f"no row survived the automatic gates to be sampled: {funnel}"
    assert store.progress(BATCH).total == len(sample)
    token = store.add_reviewer("alice@example.org")
    reason = "wrong refund window <script>x</script>"
    with start_review_server(store, reviewer_hash) as url, chromium_driver() as driver:
        sign_in(driver, url, token)
        driver.get(f"{url}/batch/{BATCH}")
        # Each submit reloads the page: every lookup below waits on the new page and never touches an element of
        # the old one (a found element can go stale while the next page loads).
        wait = WebDriverWait(driver, 15, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))

        def row_id() -> str:
            return wait.until(lambda d: d.find_element(By.ID, "row").get_attribute("data-row-id"))

        rejected_id = row_id()
        press(driver, "r", "1", "t", reason, Keys.ESCAPE, Keys.ENTER)  # reject, factual error, reason, submit
        wait.until(lambda d: "notice=recorded" in d.current_url)
        for _ in range(len(sample) - 1):  # accept the rest of the sample
            current = row_id()
            press(driver, "a", Keys.ENTER)
            wait.until(lambda d: d.find_elements(By.ID, "complete")
                       or d.find_element(By.ID, "row").get_attribute("data-row-id") != current)
        wait.until(lambda d: d.find_elements(By.ID, "complete"))
    assert store.progress(BATCH).complete

    # The sensor launches the review job for this batch exactly once ...
    sensor = defs.resolve_sensor_def("review_decisions_sensor")
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs, resources={"review_store": resource}))
    assert [r.partition_key for r in tick.run_requests] == [BATCH]
    again = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs, resources={"review_store": resource}, cursor=tick.cursor))
    assert again.run_requests == []
    # ... and running it (as the daemon would) changes what ships.
    result = defs.resolve_job_def(REVIEW_JOB).execute_in_process(
        partition_key=BATCH, instance=instance, tags=tick.run_requests[0].tags, raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    accepted = store_tables.read("accepted_dataset", BATCH)
    rejects = store_tables.read("reject_log", BATCH).set_index("row_id")
    assert rejected_id not in set(accepted["row_id"])
    assert rejects.loc[rejected_id, "gate"] == "human_review"
    assert rejects.loc[rejected_id, "reject_category"] == "human_factual_error"
    assert reason in rejects.loc[rejected_id, "reject_reason"]
    slice_key = sample.set_index("row_id").loc[rejected_id, "slice_key"]
    if int(sample.set_index("row_id").loc[rejected_id, "acceptance_number"]) == 0:  # one defect > c = 0: slice goes back
        returned = rejects[rejects["reject_category"] == "returned_to_synthesis"]
        reviewed = store_tables.read("human_review", BATCH)
        same_slice = set(reviewed.loc[reviewed["slice_key"] == slice_key, "row_id"]) - {rejected_id}
        assert set(returned.index) == same_slice  # the rest of the slice goes back, however many rows it holds
        assert returned["reject_reason"].str.contains(f"slice {slice_key} defect rate 1/").all()
    folder = _folder(batch_run)
    report = verify_pack(folder, expected_batch=BATCH)
    assert report.ok, report.summary()
    records = {json.loads(l)["row_id"]: json.loads(l) for l in (folder / "lineage.jsonl").read_text().splitlines()}
    assert records[rejected_id]["review"]["reviewer_id_hashed"] == reviewer_hash("alice@example.org")
    assert records[rejected_id]["decision"] == "rejected" and records[rejected_id]["rejected_by"] == "human_review"
    assert "alice@example.org" not in "".join(p.read_text(errors="ignore") for p in folder.iterdir() if p.suffix != ".png")
    card = (folder / "README.md").read_text()
    assert "<script>x</script>" not in card  # a reviewer's text is data on the card too
