"""Retrain orchestration: lock refusal, failure leaves latest untouched, promotion gate, notify."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from retrieval.retrain import Retrainer, RetrainRequest, compare_f1
from tests.test_dbr_fakes import FakeKB, FakeRegistry, TrainResult, write_data_dir
from vaner.errors import AlreadyRunning, InvalidArgument
from vaner.locks import exclusive_lock
from vaner.settings import Settings


@pytest.fixture()
def env(tmp_path):
    return Settings(home=tmp_path / "home").ensure(), write_data_dir(tmp_path / "data"), tmp_path


def _trainer(f1: float, seen: dict | None = None):
    def train(config, *, extra_sentences=(), progress=None):
        if seen is not None:
            seen["extra"] = list(extra_sentences)
            seen["config"] = config
        art = config.run_dir / "best"
        art.mkdir(parents=True, exist_ok=True)
        return TrainResult(art, {"f1": f1, "datasets": {"ncbi": {"f1": f1}}})
    return train


def _request(data, **kw):
    return RetrainRequest(datasets=("ncbi",), data_dir=str(data), train_overrides={"epochs": 1}, **kw)


def test_retrain_registers_records_snapshot_and_mixes_dbr(env):
    settings, data, _ = env
    reg, seen, told = FakeRegistry(), {}, []
    out = Retrainer(settings, kb=FakeKB(), registry=reg, train_fn=_trainer(0.8, seen),
                    notifier=told.append).run(_request(data))
    assert out.promoted and reg.latest == out.model.id and out.model.kb_snapshot == "snap-1"
    assert seen["extra"] and all(s.dataset is None for s in seen["extra"])
    assert seen["config"].datasets == ("ncbi",) and seen["config"].epochs == 1
    assert told == [out.model.id] and out.notified == "ok"
    assert out.to_dict()["dbr_set"].startswith("retrieved-")


def test_promotion_gate_uses_the_margin(env):
    settings, data, _ = env
    reg = FakeRegistry(latest_f1=80.0)
    worse = Retrainer(settings, kb=FakeKB(), registry=reg, train_fn=_trainer(79.4)).run(
        _request(data, promote_margin=0.5))
    assert not worse.promoted and reg.latest == "m0" and "below" in worse.reason
    slightly = Retrainer(settings, kb=FakeKB(), registry=reg, train_fn=_trainer(79.6)).run(
        _request(data, promote_margin=0.5))
    assert slightly.promoted and reg.latest == slightly.model.id


def test_failing_trainer_leaves_latest_unchanged(env):
    settings, data, _ = env
    reg = FakeRegistry(latest_f1=0.5)

    def boom(config, *, extra_sentences=(), progress=None):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        Retrainer(settings, kb=FakeKB(), registry=reg, train_fn=boom).run(_request(data))
    assert reg.latest == "m0" and len(reg.records) == 1
    # the lock was released: the next retrain runs
    assert Retrainer(settings, kb=FakeKB(), registry=reg, train_fn=_trainer(0.6)).run(_request(data)).promoted


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


def test_notifier_failure_does_not_undo_promotion(env):
    settings, data, _ = env
    reg = FakeRegistry()

    def down(version):
        raise ConnectionError("tagger down")

    out = Retrainer(settings, kb=FakeKB(), registry=reg, train_fn=_trainer(0.7), notifier=down).run(_request(data))
    assert out.promoted and reg.latest == out.model.id and out.notified.startswith("failed")


def test_compare_f1_scales_and_shared_datasets():
    assert compare_f1({"dev": {"f1": 80.0}}, {"dev": {"f1": 79.0}}) == (80.0, 79.0)
    new = {"dev": {"f1": 50.0, "datasets": {"ncbi": {"f1": 90.0}, "s800": {"f1": 10.0}}}}
    old = {"dev": {"f1": 85.0, "datasets": {"ncbi": {"f1": 85.0}}}}
    assert compare_f1(new, old) == (pytest.approx(90.0), pytest.approx(85.0))
    assert compare_f1({"dev": {}}, None) == (None, None)
