"""`vaner dbr build|list` and `vaner retrain` through the real dispatcher, with fakes behind them."""

from __future__ import annotations

import json

import pytest

from tests.test_dbr_fakes import FakeEvaluator, FakeKB, FakeRegistry, TrainResult, fake_artifact, write_data_dir


@pytest.fixture()
def patched(tmp_path, monkeypatch, vaner_home):
    import kb_ingest.kb

    kb = FakeKB()
    monkeypatch.setattr(kb_ingest.kb, "KnowledgeBase", lambda settings: kb)
    return write_data_dir(tmp_path / "data"), kb


def _run(argv, capsys):
    from vaner.cli import main

    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dbr_build_json_and_cache(patched, capsys):
    data, _ = patched
    argv = ["dbr", "build", "--datasets", "ncbi,s800", "--data-dir", str(data), "--seed", "4", "--json"]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    first = json.loads(out)
    assert first["sentences"] > 0 and first["snapshot"] == "snap-1" and not first["cached"]
    code, out, _ = _run(argv, capsys)
    assert json.loads(out)["cached"] and json.loads(out)["id"] == first["id"]
    code, out, _ = _run(["dbr", "list", "--json"], capsys)
    assert [m["id"] for m in json.loads(out)] == [first["id"]]
    code, out, err = _run([*argv, "--corpus-agreement", "0.5"], capsys)
    assert code == 0, err
    agreed = json.loads(out)
    assert agreed["id"] != first["id"] and not agreed["cached"]
    code, _, err = _run([*argv, "--corpus-agreement", "2"], capsys)
    assert code == 2 and "corpus_agreement" in err
    code, out, err = _run([*argv, "--max-uses", "1", "--top-k", "3"], capsys)
    assert code == 0, err
    spread = json.loads(out)
    assert spread["id"] not in (first["id"], agreed["id"]) and spread["counts"]["dropped_by_max_uses"] >= 0


def test_dbr_build_errors_are_one_line(patched, capsys):
    data, _ = patched
    code, _, err = _run(["dbr", "build", "--datasets", "nosuch", "--data-dir", str(data)], capsys)
    assert code == 3 and err.startswith("error: unknown dataset")
    code, _, err = _run(["dbr", "build", "--kb-snapshot", "s-404", "--datasets", "ncbi", "--data-dir", str(data)],
                        capsys)
    assert code == 3 and "snapshot" in err


def test_retrain_cli_with_fake_trainer(patched, capsys, monkeypatch, tmp_path):
    import retrieval.gate
    import tagger.registry
    import tagger.train
    import tagger.warm_start

    data, kb = patched
    reg = FakeRegistry(latest_f1=90.0, datasets=["ncbi"], artifact=fake_artifact(tmp_path / "current"))
    monkeypatch.setattr(tagger.registry, "ModelRegistry", lambda settings: reg)
    evaluator = FakeEvaluator({"current": {"ncbi": 90.0}, "best": {"ncbi": 80.0}})
    monkeypatch.setattr(retrieval.gate, "evaluate_artifact", evaluator)
    monkeypatch.setattr(tagger.warm_start, "load_trainable", lambda artifact, device="auto": "warm")
    seen = {}

    def fake_train(config, *, extra_sentences=(), progress=None, model=None):
        seen["config"], seen["model"] = config, model
        art = fake_artifact(config.run_dir / "best", config.model.to_dict())
        return TrainResult(art, {"f1": 80.0, "datasets": {"ncbi": {"f1": 80.0}}})

    monkeypatch.setattr(tagger.train, "train", fake_train)
    code, out, err = _run(["retrain", "--data-dir", str(data), "--epochs", "2", "--num-layers", "2",
                           "--set", "lr=0.0002", "--dbr-set", "max_uses=1", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    from vaner.settings import Settings

    manifest = json.loads((Settings.from_env().dbr_dir / res["dbr_set"] / "manifest.json").read_text())
    assert manifest["params"]["max_uses"] == 1  # --dbr-set reaches the DBR build
    assert res["promoted"] is False and reg.latest == "m0" and res["snapshot"] == "snap-1"
    assert res["warm_start"] == "m0" and seen["model"] == "warm"
    assert res["gate"]["datasets"] == [{"dataset": "ncbi", "old": 90.0, "new": 80.0, "delta": -10.0,
                                        "verdict": "drop", "sentences": 4}]
    assert seen["config"].datasets == ("ncbi",)  # the current model's datasets by default
    assert seen["config"].epochs == 2 and seen["config"].model.num_layers == 2 and seen["config"].lr == 2e-4
    evaluator.scores["best"] = {"ncbi": 91.0}
    code, out, err = _run(["retrain", "--data-dir", str(data)], capsys)
    assert code == 0, err
    assert out.splitlines()[0].split() == ["ncbi", "old", "90.00", "new", "91.00", "+1.00", "ok"]
    assert "PROMOTED to latest" in out and "warm start from m0" in out and reg.latest != "m0"


@pytest.mark.parametrize("argv, message", [
    (["--set", "nosuch=1"], "unknown training setting 'nosuch'"),
    (["--set", "model.lora_rank=4"], "unknown model setting 'lora_rank'"),
    (["--num-layers", "3"], "--from-scratch"),
    (["--lr", "7"], "learning rates"),
    (["--dbr-set", "max_use=1"], "unknown DBR setting 'max_use'"),
    (["--dbr-set", "max_uses=-1"], "max_uses must be >= 0"),
    (["--dbr-set", "top_k"], "--dbr-set expects KEY=VALUE"),
])
def test_retrain_cli_refuses_bad_overrides_before_any_dbr_work(patched, capsys, monkeypatch, tmp_path, argv,
                                                               message):
    import tagger.registry
    import tagger.train

    data, kb = patched
    reg = FakeRegistry(latest_f1=90.0, datasets=["ncbi"], artifact=fake_artifact(tmp_path / "current"))
    monkeypatch.setattr(tagger.registry, "ModelRegistry", lambda settings: reg)
    monkeypatch.setattr(tagger.train, "train", lambda *a, **k: pytest.fail("trained"))
    code, out, err = _run(["retrain", "--data-dir", str(data), *argv], capsys)
    assert code == 2 and err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert kb.search_calls == 0 and kb.encoder.calls == 0 and len(reg.records) == 1


def test_train_dbr_through_the_dispatcher(patched, capsys, monkeypatch, tmp_path):
    """``vaner train --dbr`` is composed by the dispatcher: the tagger command gets the Retrainer's
    DBR sentences without the tagger package importing retrieval."""
    import types

    import tagger.train

    data, _ = patched
    seen = {}

    def fake_train(config, *, extra_sentences=(), progress=None, resume=True, model=None):
        seen["extra"] = list(extra_sentences)
        return types.SimpleNamespace(run_dir=tmp_path / "run", artifact_dir=tmp_path / "run" / "best",
                                     dev_metrics={"f1": 1.0}, steps=1, tokens_per_second=1.0)

    monkeypatch.setattr(tagger.train, "train", fake_train)
    code, out, err = _run(["train", "--datasets", "ncbi", "--data-dir", str(data), "--dbr", "retrieved",
                           "--no-register", "--json", "--output-dir", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert seen["extra"] and all(s.dataset is None for s in seen["extra"])
    assert json.loads(out)["steps"] == 1
