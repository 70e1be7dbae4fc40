"""Retrain orchestration with fakes behind it: lock refusal, failure leaves latest untouched, the
promotion gate (same dev sentences, every dataset, margin and macro), warm-start planning, early
refusal of bad overrides, notify."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest

from retrieval.gate import decide, gate_sample
from retrieval.retrain import Retrainer, RetrainRequest
from tests.test_dbr_fakes import FakeEvaluator, FakeKB, FakeRegistry, TrainResult, fake_artifact, write_data_dir
from vaner.errors import AlreadyRunning, InvalidArgument, NotFound
from vaner.locks import exclusive_lock
from vaner.settings import Settings


@pytest.fixture()
def env(tmp_path):
    return Settings(home=tmp_path / "home").ensure(), write_data_dir(tmp_path / "data"), tmp_path


def _trainer(f1: float, seen: dict | None = None):
    def train(config, *, extra_sentences=(), progress=None, **kw):
        if seen is not None:
            seen["extra"] = list(extra_sentences)
            seen["config"] = config
            seen["kw"] = kw
        art = fake_artifact(config.run_dir / "best", config.model.to_dict())
        return TrainResult(art, {"f1": f1, "datasets": {"ncbi": {"f1": f1}}})
    return train


def _request(data, **kw):
    kw.setdefault("datasets", ("ncbi",))
    kw.setdefault("train_overrides", {"epochs": 1})
    return RetrainRequest(data_dir=str(data), **kw)


def _current(tmp_path, datasets=("ncbi", "s800"), **kw):
    """A registry whose latest model m0 covers ``datasets``; its artifact folder is named 'current'."""
    return FakeRegistry(latest_f1=80.0, datasets=datasets, artifact=fake_artifact(tmp_path / "current"), **kw)


def _retrainer(settings, reg, scores, seen=None, **kw):
    evaluator = FakeEvaluator(scores)
    kw.setdefault("model_loader", lambda artifact, device: ("loaded", str(artifact)))
    return Retrainer(settings, kb=kw.pop("kb", FakeKB()), registry=reg, train_fn=_trainer(0.0, seen),
                     evaluator=evaluator, **kw), evaluator


def test_retrain_registers_records_snapshot_and_mixes_dbr(env):
    settings, data, _ = env
    reg, seen, told = FakeRegistry(), {}, []
    out = Retrainer(settings, kb=FakeKB(), registry=reg, train_fn=_trainer(0.8, seen),
                    notifier=told.append).run(_request(data))
    assert out.promoted and reg.latest == out.model.id and out.model.kb_snapshot == "snap-1"
    assert seen["extra"] and all(s.dataset is None for s in seen["extra"])
    assert seen["config"].datasets == ("ncbi",) and seen["config"].epochs == 1
    assert "model" not in seen["kw"] and out.warm_start is None  # no current model: from scratch
    assert told == [out.model.id] and out.notified == "ok"
    assert out.to_dict()["dbr_set"].startswith("retrieved-")
    assert out.gate.reason == "no current model to compare with" and out.gate.rows == ()


def test_gate_refuses_a_model_better_on_one_dataset_and_worse_on_another(env):
    settings, data, tmp = env
    reg = _current(tmp)
    retrainer, ev = _retrainer(settings, reg, {"current": {"ncbi": 80.0, "s800": 70.0},
                                               "best": {"ncbi": 90.0, "s800": 65.0}})
    out = retrainer.run(_request(data, promote_margin=0.5))
    assert not out.promoted and reg.latest == "m0" and len(reg.records) == 2  # registered, not promoted
    gate = out.to_dict()["gate"]
    assert [(r["dataset"], r["old"], r["new"], r["delta"], r["verdict"]) for r in gate["datasets"]] == [
        ("ncbi", 80.0, 90.0, 10.0, "ok"), ("s800", 70.0, 65.0, -5.0, "drop")]
    assert gate["macro"] == {"old": 75.0, "new": 77.5, "delta": 2.5}  # the macro went UP, still refused
    assert "s800 drops 5.00" in out.reason and gate["current"] == "m0"
    assert reg.records[1].metrics["gate"] == gate  # the table is kept with the rejected model


def test_both_models_are_scored_on_the_same_recorded_dev_sentences(env):
    settings, data, tmp = env
    reg = _current(tmp)
    retrainer, ev = _retrainer(settings, reg, {"current": {"ncbi": 50.0, "s800": 50.0},
                                               "best": {"ncbi": 51.0, "s800": 50.0}})
    out = retrainer.run(_request(data, gate_sentences=3, gate_seed=7))
    assert out.promoted
    assert ev.seen["current"] == ev.seen["best"]  # same sentences, in the same order
    assert set(ev.seen["best"]) == {"ncbi", "s800"} and len(ev.seen["best"]["ncbi"]) == 3
    recorded = json.loads(open(out.gate.sample_file).read())
    assert recorded["seed"] == 7 and recorded["sha256"] == out.gate.sample_sha256
    sample = gate_sample(["ncbi", "s800"], str(data), 3, 7)
    assert recorded["ids"] == sample.ids
    sources = {d: [s.source for s in sents] for d, sents in sample.sentences.items()}
    assert sources == ev.seen["best"]
    assert all(i.startswith("ncbi:dev:") for i in recorded["ids"]["ncbi"])


def test_gate_sample_is_seeded_and_per_dataset(env):
    _, data, _ = env
    a, b = gate_sample(["ncbi", "s800"], str(data), 2, 1), gate_sample(["ncbi", "s800"], str(data), 2, 1)
    assert a.ids == b.ids and a.digest() == b.digest()
    assert gate_sample(["ncbi"], str(data), 2, 1).ids["ncbi"] == a.ids["ncbi"]  # independent of the other sets
    assert {tuple(gate_sample(["ncbi"], str(data), 2, s).ids["ncbi"]) for s in range(8)} != {tuple(a.ids["ncbi"])}
    assert gate_sample(["ncbi"], str(data), None, 1).ids["ncbi"] == [f"ncbi:dev:{i}" for i in range(4)]


def test_gate_covers_every_dataset_of_the_current_model_and_defaults_to_them(env):
    settings, data, tmp = env
    reg = _current(tmp, datasets=("ncbi", "s800", "dbr:retrieved", "/x/own.tsv"))
    seen: dict = {}
    retrainer, ev = _retrainer(settings, reg, {"current": {"ncbi": 80.0, "s800": 70.0},
                                               "best": {"ncbi": 80.0, "s800": 70.0}}, seen)
    out = retrainer.run(_request(data))  # trains on ncbi only, is gated on s800 too
    assert seen["config"].datasets == ("ncbi",) and set(ev.seen["best"]) == {"ncbi", "s800"}
    assert out.gate.not_evaluated == ("/x/own.tsv",) and out.promoted
    out = retrainer.run(_request(data, datasets=None))  # default: the current model's datasets
    assert seen["config"].datasets == ("ncbi", "s800")


@pytest.mark.parametrize("new, promoted, why", [
    ({"ncbi": 80.6, "s800": 69.6}, True, "no dataset drops"),      # s800 -0.4 within the margin, macro +0.1
    ({"ncbi": 80.2, "s800": 69.6}, False, "macro F1 drops"),       # both within the margin, macro -0.1
    ({"ncbi": 80.0, "s800": 70.0}, True, "no dataset drops"),      # equal is not a drop
])
def test_gate_margin_and_macro(new, promoted, why):
    from retrieval.gate import GateSample

    sample = GateSample(0, None, {}, {"ncbi": ["ncbi:dev:0"], "s800": ["s800:dev:0"]})
    report = decide({"ncbi": 80.0, "s800": 70.0}, new, sample, 0.5, "m0")
    assert report.promote is promoted and why in report.reason


def test_warm_start_is_the_default_and_continues_the_current_model(env):
    settings, data, tmp = env
    reg = _current(tmp, hyperparameters={"epochs": 4, "steps_per_epoch": 1000})
    seen: dict = {}
    retrainer, _ = _retrainer(settings, reg, {"current": {"ncbi": 1.0, "s800": 1.0},
                                              "best": {"ncbi": 1.0, "s800": 1.0}}, seen)
    out = retrainer.run(_request(data, train_overrides={}))
    cfg = seen["config"]
    assert seen["kw"]["model"] == ("loaded", str(tmp / "current"))
    assert cfg.model.backbone == "tiny" and cfg.model.num_layers == 2  # the model's own settings
    assert (cfg.epochs, cfg.steps_per_epoch) == (1, math.ceil(0.1 * 4000))
    assert out.warm_start == "m0" and reg.records[-1].hyperparameters["warm_start"] == "m0"
    assert reg.records[-1].datasets == ["ncbi", "s800"]  # inherits what it was gated on
    # the budget: the artifact's saved step when the record has none; explicit flags win
    reg2 = _current(tmp)
    retrainer, _ = _retrainer(settings, reg2, {"current": {"ncbi": 1.0, "s800": 1.0},
                                               "best": {"ncbi": 1.0, "s800": 1.0}}, seen)
    retrainer.run(_request(data, train_overrides={}, warm_fraction=0.5))
    assert seen["config"].steps_per_epoch == 20  # fake_artifact saved at step 40
    # a chain of warm starts keeps costing a share of the FIRST training, not of the last retrain
    assert reg.records[-1].hyperparameters["first_training_steps"] == 4000
    retrainer, _ = _retrainer(settings, reg, {"best": {"ncbi": 1.0, "s800": 1.0}}, seen)
    retrainer.run(_request(data, train_overrides={}))
    assert seen["config"].steps_per_epoch == 400 and reg.records[-1].hyperparameters["warm_start"] == "m1"
    retrainer, _ = _retrainer(settings, reg2, {"current": {"ncbi": 1.0, "s800": 1.0},
                                               "best": {"ncbi": 1.0, "s800": 1.0}}, seen)
    retrainer.run(_request(data, train_overrides={"steps_per_epoch": 3, "model": {"num_layers": 2}}))
    assert (seen["config"].epochs, seen["config"].steps_per_epoch) == (1, 3)
    # --from-scratch: a new adapter and head, today's behaviour
    retrainer.run(_request(data, train_overrides={"model": {"backbone": "other"}}, from_scratch=True))
    assert "model" not in seen["kw"] and seen["config"].model.backbone == "other"


class CountingSource:
    """A dbr_source that counts builds (DBR work) and fails the test if it is ever reached."""

    def __init__(self):
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        raise AssertionError("DBR was built")


@pytest.mark.parametrize("overrides, match", [
    ({"nosuch": 1}, "unknown training setting 'nosuch'"),
    ({"model": {"nosuch": 1}}, "unknown model setting 'nosuch'"),
    ({"datasets": ["s800"]}, "may not set datasets"),
    ({"model": 3}, "must be an object"),
])
def test_unknown_overrides_are_refused_when_the_request_is_made(env, overrides, match):
    _, data, _ = env
    with pytest.raises(InvalidArgument, match=match):
        _request(data, train_overrides=overrides)


@pytest.mark.parametrize("overrides, kw, match", [
    ({"lr": 5.0}, {}, "learning rates"),
    ({"model": {"num_layers": 3}}, {}, "--from-scratch"),          # disagrees with the model it continues
    ({"model": {"lora_r": 4}}, {}, "lora_r 4 vs 12"),
    ({}, {"datasets": None, "data_dir": "/nonexistent"}, "no such file"),  # a missing dev split, for the gate
])
def test_bad_settings_fail_before_any_kb_or_dbr_work(env, overrides, kw, match):
    settings, data, tmp = env
    kb, source = FakeKB(), CountingSource()
    reg = _current(tmp)
    retrainer = Retrainer(settings, kb=kb, registry=reg, dbr_source=source, train_fn=_trainer(1.0),
                          evaluator=FakeEvaluator({}), model_loader=lambda a, d: None)
    kb.get_snapshot = lambda ref="latest": (_ for _ in ()).throw(AssertionError("KB touched"))
    req = RetrainRequest(**{"datasets": ("ncbi",), "data_dir": str(data), "train_overrides": overrides, **kw})
    with pytest.raises((InvalidArgument, NotFound), match=match):
        retrainer.run(req)
    assert source.calls == 0 and kb.search_calls == 0 and len(reg.records) == 1
    assert not (settings.home / "dbr").exists() or not any((settings.home / "dbr").iterdir())


def test_no_datasets_and_no_current_model_is_refused(env):
    settings, data, _ = env
    with pytest.raises(InvalidArgument, match="pass --datasets"):
        Retrainer(settings, kb=FakeKB(), registry=FakeRegistry(), train_fn=_trainer(1.0)).run(
            _request(data, datasets=None))


def test_failing_trainer_leaves_latest_unchanged(env):
    settings, data, tmp = env
    reg = _current(tmp)

    def boom(config, *, extra_sentences=(), progress=None, **kw):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        Retrainer(settings, kb=FakeKB(), registry=reg, train_fn=boom, evaluator=FakeEvaluator(
            {"current": {"ncbi": 1.0, "s800": 1.0}}), model_loader=lambda a, d: None).run(_request(data))
    assert reg.latest == "m0" and len(reg.records) == 1
    # the lock was released: the next retrain runs
    retrainer, _ = _retrainer(settings, reg, {"current": {"ncbi": 1.0, "s800": 1.0},
                                              "best": {"ncbi": 2.0, "s800": 1.0}})
    assert retrainer.run(_request(data)).promoted


def test_second_retrain_is_refused_while_one_runs(env):
    settings, data, _ = env
    reg = FakeRegistry()
    with exclusive_lock(settings, "retrain"):
        with pytest.raises(AlreadyRunning) as err:
            Retrainer(settings, kb=FakeKB(), registry=reg, train_fn=_trainer(0.9)).run(_request(data))
    assert "already running" in err.value.message and str(settings.locks_dir) in err.value.message
    assert reg.records == []


def test_killed_retrain_releases_the_lock(env):
    settings, _, _ = env
    code = ("import sys,time; sys.path.insert(0, '.');"
            "from vaner.locks import exclusive_lock; from vaner.settings import Settings;"
            f"cm = exclusive_lock(Settings(home={str(settings.home)!r}), 'retrain'); cm.__enter__();"
            "print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(AlreadyRunning) as err:
            with exclusive_lock(settings, "retrain"):
                pass
        assert f"pid {proc.pid}" in err.value.message
    finally:
        proc.kill()
        proc.wait()
    time.sleep(0.05)
    with exclusive_lock(settings, "retrain"):
        pass


def test_random_and_none_modes(env):
    settings, data, _ = env
    seen: dict = {}
    out = Retrainer(settings, kb=FakeKB(), registry=FakeRegistry(), train_fn=_trainer(0.7, seen)).run(
        _request(data, dbr_mode="none"))
    assert out.dbr_set is None and seen["extra"] == []
    out = Retrainer(settings, kb=FakeKB(), registry=FakeRegistry(), train_fn=_trainer(0.7, seen)).run(
        _request(data, dbr_mode="random"))
    assert out.dbr_set.id.startswith("random-") and seen["extra"]
    with pytest.raises(InvalidArgument):
        RetrainRequest(dbr_mode="oracle")
    with pytest.raises(InvalidArgument, match="unknown DBR setting"):
        RetrainRequest(dbr_params={"top": 3})


def test_progress_stream_reports_the_stages_and_the_gate_table(env):
    settings, data, tmp = env
    reg = _current(tmp)
    retrainer, _ = _retrainer(settings, reg, {"current": {"ncbi": 80.0, "s800": 70.0},
                                              "best": {"ncbi": 81.0, "s800": 70.0}})
    events = []
    out = retrainer.run(_request(data), progress=events.append)
    stages = [e.stage for e in events]
    assert stages[0] == "retrain" and "gate" in stages and stages[-1] == "retrain"
    table = [e.message for e in events if e.stage == "gate" and e.total]
    assert table == out.gate.lines() and table[0].startswith("ncbi") and table[-1].startswith("PROMOTE")


def test_notifier_failure_does_not_undo_promotion(env):
    settings, data, _ = env
    reg = FakeRegistry()

    def down(version):
        raise ConnectionError("tagger down")

    out = Retrainer(settings, kb=FakeKB(), registry=reg, train_fn=_trainer(0.7), notifier=down).run(_request(data))
    assert out.promoted and reg.latest == out.model.id and out.notified.startswith("failed")
