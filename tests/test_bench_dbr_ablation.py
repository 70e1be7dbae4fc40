"""bench/dbr_ablation.py end to end on the tiny random LLaMA and a fake KB per home: the rows
format, equal dataset sentences across arms with DBR on top (never more DBR than training
sentences), the shared no-DBR run, and resume/skip/--force."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.test_dbr_fakes import FakeKB, write_data_dir

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import dbr_ablation  # noqa: E402


@pytest.fixture()
def setup(tmp_path, monkeypatch, tiny_backbone):
    import kb_ingest.kb

    data = write_data_dir(tmp_path / "data")
    for name in ("ncbi", "s800"):
        (data / name / "test.tsv").write_text((data / name / "train.tsv").read_text())
    homes = {name: tmp_path / f"home-{name}" for name in ("a", "b")}
    for home in homes.values():
        home.mkdir()
    monkeypatch.setattr(kb_ingest.kb, "KnowledgeBase", lambda settings: FakeKB(snapshot_id=f"snap-{settings.home.name}"))
    out = tmp_path / "res" / "ablation.json"
    argv = ["--kb", f"a={homes['a']}", "--kb", f"b={homes['b']}", "--datasets", "ncbi", "--data-dir", str(data),
            "--dataset-epochs", "2", "--eval-every", "2", "--patience", "50", "--batch-size", "2",
            "--backbone", str(tiny_backbone), "--num-layers", "2", "--max-length", "48", "--lr", "5e-3",
            "--head-lr", "1e-2", "--device", "cpu", "--threads", "1", "--work", str(tmp_path / "work"),
            "--out", str(out)]
    return argv, out, data


def test_ablation_rows_budget_and_resume(setup, monkeypatch, capsys):
    argv, out, data = setup
    assert dbr_ablation.main(argv) == 0
    res = json.loads(out.read_text())

    rows = res["rows"]
    assert [(r["kb"], r["arm"]) for r in rows] == [(kb, arm) for kb in ("a", "b") for arm in dbr_ablation.ARMS]
    for r in rows:
        assert tuple(r) == dbr_ablation.ROW_KEYS and r["dataset"] == "ncbi"
        assert all(isinstance(r[k], (int, float)) for k in dbr_ablation.ROW_KEYS[3:])
    none_a, none_b = rows[0], rows[3]
    assert {**none_a, "kb": "b"} == none_b  # one no-DBR run, reported under every KB
    assert set(res["runs"]) == {"none/ncbi", "a/ncbi/retrieved", "a/ncbi/random", "b/ncbi/retrieved",
                                "b/ncbi/random"}

    # equal budget of dataset sentences; DBR on top, never more than the training sentences
    n_train = 4
    for key, run in res["runs"].items():
        assert run["train_sentences"] == n_train and not run["stopped_early"]
        assert run["dataset_sentences"] == 2 * n_train, key
        assert run["dbr_sentences"] <= run["train_sentences"]
        assert run["dbr_sentences_seen"] <= run["dataset_sentences"]
        if key == "none/ncbi":
            assert run["dbr_sentences"] == 0 and run["dbr_sentences_seen"] == 0
        else:
            assert 0 < run["dbr_sentences"] and run["dbr_sentences_seen"] == 2 * run["dbr_sentences"]
            assert run["steps"] > res["runs"]["none/ncbi"]["steps"]
        curve = res["curves"][key]
        assert len(curve) >= 2 and curve[-1]["dataset_sentences"] == 2 * n_train
        assert [p["dataset_sentences"] for p in curve] == sorted(p["dataset_sentences"] for p in curve)

    # provenance, DBR cost and diagnostics
    assert res["kbs"]["a"]["snapshot"] == "snap-home-a" and res["kbs"]["b"]["snapshot"] == "snap-home-b"
    d = res["dbr"]["a/ncbi/retrieved"]
    assert d["instruction"] == "If any Disease entity is mentioned in the input, extract it. ##input:"
    assert d["sentences"] == res["runs"]["a/ncbi/retrieved"]["dbr_sentences"]
    assert d["entities_per_sentence"] > 0 and 0 < d["positive_share"] <= 1 and d["distinct_concepts"] > 0
    assert d["build_seconds"] is not None and 0 <= d["gold_mentions_injected"] <= 1
    assert res["dbr"]["a/ncbi/random"]["entities_per_sentence"] == d["entities_per_sentence"]
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "| ncbi | a | retrieved |" in capsys.readouterr().out

    # a rerun skips every finished run
    import tagger.train

    def no_training(*a, **k):
        raise AssertionError("a finished run was retrained")

    monkeypatch.setattr(tagger.train, "train", no_training)
    assert dbr_ablation.main(argv) == 0
    again = json.loads(out.read_text())
    assert again["rows"] == rows and len(again["commands"]) == 2

    # --force retrains what is asked, and only that
    calls = []
    monkeypatch.undo()  # restores the real trainer (and the real KB: re-patch it)
    import kb_ingest.kb

    monkeypatch.setattr(kb_ingest.kb, "KnowledgeBase", lambda settings: FakeKB(snapshot_id=f"snap-{settings.home.name}"))
    real = tagger.train.train
    monkeypatch.setattr(tagger.train, "train", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert dbr_ablation.main([*argv, "--arms", "none", "--force"]) == 0
    assert len(calls) == 1 and len(json.loads(out.read_text())["rows"]) == 6


def test_dbr_only_builds_and_describes_the_sets_without_training(setup, monkeypatch):
    import tagger.train

    argv, out, _ = setup
    monkeypatch.setattr(tagger.train, "train", lambda *a, **k: pytest.fail("--dbr-only trained"))
    assert dbr_ablation.main([*argv, "--dbr-only"]) == 0
    res = json.loads(out.read_text())
    assert res["rows"] == [] and res["runs"] == {}
    assert set(res["dbr"]) == {f"{kb}/ncbi/{mode}" for kb in ("a", "b") for mode in ("retrieved", "random")}


def test_rerun_with_another_protocol_or_snapshot_is_refused(setup, monkeypatch):
    argv, out, _ = setup
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps({"rows": [], "runs": {}, "curves": {}, "dbr": {}, "commands": [],
                               "kbs": {}, "protocol": {**dbr_ablation.protocol(dbr_ablation.parse_args(argv)),
                                                       "lr": 1.0}}))
    with pytest.raises(SystemExit, match="protocol differs"):
        dbr_ablation.main(argv)
    res = json.loads(out.read_text())
    res["protocol"] = json.loads(json.dumps(dbr_ablation.protocol(dbr_ablation.parse_args(argv))))
    res["kbs"] = {"a": {"snapshot": "snap-old", "terms": 999}}
    out.write_text(json.dumps(res))
    with pytest.raises(SystemExit, match=r"KB 'a' \(kind, encoder, terms, concepts\) differs"):
        dbr_ablation.main(argv)


def test_a_rebuilt_snapshot_of_the_same_content_joins_the_results():
    """A lost home re-ingested from the same release gets a new id: same content is accepted and listed."""
    old = {"snapshot": "kb-1", "kind": "umls", "encoder": "m", "terms": 10, "concepts": 4, "home": "h"}
    joined = dbr_ablation.join_kb("KB 'x'", old, {**old, "snapshot": "kb-2"}, Path("r.json"))
    assert joined["snapshot"] == "kb-1" and joined["equivalent_snapshots"] == ["kb-1", "kb-2"]
    assert dbr_ablation.join_kb("KB 'x'", joined, {**old, "snapshot": "kb-2"}, Path("r.json")) == joined
    with pytest.raises(SystemExit, match="differs"):
        dbr_ablation.join_kb("KB 'x'", old, {**old, "snapshot": "kb-3", "terms": 11}, Path("r.json"))


def test_budget_and_kb_specs():
    args = dbr_ablation.parse_args(["--kb", "x=/h@kb-1", "--max-dataset-sentences", "30", "--batch-size", "8"])
    assert args.kbs[0] == dbr_ablation.KbArm("x", Path("/h"), "kb-1")
    assert dbr_ablation.budget(args, 100) == (1, 4, 16)  # 30 sentences -> 4 steps of 8
    assert dbr_ablation.budget(args, 10) == (2, 2, 8)  # 2 steps of 8 per epoch (a pass, rounded up), 2 epochs >= 30
    args = dbr_ablation.parse_args(["--kb", "x=/h", "--dataset-epochs", "3"])
    assert dbr_ablation.budget(args, 100) == (3, None, 50) and args.kbs[0].snapshot == "latest"
    for bad in (["--kb", "nohome"], ["--kb", "a/b=/h"], ["--kb", "x=/h", "--arms", "none,bogus"],
                ["--kb", "x=/h", "--kb", "x=/g"], ["--kb", "x=/h", "--patience", "0"]):
        with pytest.raises(SystemExit):
            dbr_ablation.parse_args(bad)


def test_a_checkpoint_of_another_configuration_is_not_resumed(tmp_path):
    args = dbr_ablation.parse_args(["--kb", "x=/h", "--device", "cpu"])
    config = dbr_ablation.train_config(args, "ncbi", 100, tmp_path / "run")
    saved = tmp_path / "run" / "checkpoint" / "tagger_config.json"
    saved.parent.mkdir(parents=True)
    same = json.loads(json.dumps(config.to_dict()))
    saved.write_text(json.dumps({"train_config": {**same, "device": "cuda", "threads": 4}}))
    dbr_ablation.check_resumable(config, force=False)  # where it runs is not what it measures
    saved.write_text(json.dumps({"train_config": {**same, "lr": 1e-3}}))
    with pytest.raises(SystemExit, match="another configuration"):
        dbr_ablation.check_resumable(config, force=False)
    dbr_ablation.check_resumable(config, force=True)
    assert not (tmp_path / "run").exists()


def test_arms_run_in_parallel_processes_merge_into_one_results_file(setup):
    """One arm per core writes its own file; --merge joins them, and refuses files of another protocol
    (DBR settings aside for a file holding only the no-DBR arm, which never sees them)."""
    argv, out, _ = setup
    parts = []
    for arm, dbr in (("none", ["--dbr-max-positive", "3"]), ("retrieved", [])):
        part = out.with_name(f"{arm}.json")
        assert dbr_ablation.main([*[a if a != str(out) else str(part) for a in argv], "--arms", arm, *dbr]) == 0
        parts.append(part)
    assert dbr_ablation.main(["--merge", *map(str, parts), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["runs"]) == {"none/ncbi", "a/ncbi/retrieved", "b/ncbi/retrieved"}
    assert [(r["kb"], r["arm"]) for r in res["rows"]] == [("a", "none"), ("a", "retrieved"), ("b", "none"),
                                                          ("b", "retrieved")]
    assert len(res["commands"]) == 3 and "--merge" in res["commands"][-1]["command"]
    assert out.with_suffix(".png").exists()
    assert res["protocol"]["dbr"]["max_positive"] == 10  # the DBR arm's; the no-DBR run joins any DBR variant

    other = json.loads(parts[0].read_text())
    other["protocol"]["lr"] = 1.0
    parts[0].write_text(json.dumps(other))
    with pytest.raises(SystemExit, match=r"protocol \(DBR settings aside\) differs"):
        dbr_ablation.main(["--merge", *map(str, parts), "--out", str(out.with_name("again.json"))])
