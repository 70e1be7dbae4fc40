"""The serving core under abuse, in-process (fake back ends, so each test takes well under a
second): round-robin passes across calls, stopped and abandoned calls dropped between passes,
the per-call cost cap, following the registry's ``latest``, and the health probe."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import pytest

from services.testing import DocumentBackend, register_model
from tagger.formats import Document, Entity
from tagger.serving import Limits, MicroBatcher, TaggerCore
from vaner import errors as E
from vaner.settings import Settings

PASS_S = 0.01


class Recorder:
    """A back end ``run``: records which units each pass held, sleeps PASS_S per pass."""

    def __init__(self, fail_on: str | None = None):
        self.passes: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, units):
        self.passes.append(list(units))
        time.sleep(PASS_S)
        if self.fail_on is not None and self.fail_on in units:
            raise RuntimeError("model broke")
        return [u.upper() for u in units]


def units(name: str, n: int, produced: list | None = None):
    for i in range(n):
        if produced is not None:
            produced.append(i)
        yield f"{name}{i}"


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.002)


def test_a_small_call_behind_a_huge_one_is_served_in_the_next_pass():
    run = Recorder()
    b = MicroBatcher(run, max_units=8, max_wait_ms=0)
    huge = b.submit(units("h", 100_000))
    wait_for(lambda: len(run.passes) >= 3)
    before = len(run.passes)
    small = b.submit(units("s", 3))
    assert small.result(5) == ["S0", "S1", "S2"]
    assert len(run.passes) - before <= 2  # joined the next pass (plus the one running when it came)
    assert not huge.done()
    huge.cancel()
    b.close()


def test_every_call_gets_its_turn_when_calls_outnumber_slots():
    run = Recorder()
    gate = threading.Event()
    b = MicroBatcher(lambda u: (gate.wait(5), run(u))[1], max_units=2, max_wait_ms=50)
    futs = [b.submit(units(f"c{k}-", 10)) for k in range(5)]
    gate.set()
    for f in futs:
        assert len(f.result(10)) == 10
    first_five = [u.split("-")[0] for p in run.passes[:5] for u in p]
    assert sorted(first_five) == sorted([f"c{k}" for k in range(5)] * 2)  # 10 slots, 2 per call
    b.close()


def test_a_stopped_call_is_dropped_within_one_pass_and_never_encoded_further():
    run = Recorder()
    b = MicroBatcher(run, max_units=4, max_wait_ms=0)
    produced: list[int] = []
    stop = threading.Event()
    fut = b.submit(units("x", 100_000, produced), should_stop=stop.is_set)
    wait_for(lambda: len(run.passes) >= 3)
    stop.set()
    with pytest.raises(E.Cancelled):
        fut.result(5)
    ran_then = b.units_run
    time.sleep(10 * PASS_S)
    assert b.units_run == ran_then and b.dropped == 1
    assert len(produced) <= ran_then + 4  # at most one pass of units taken but not run
    assert b.submit(units("y", 2)).result(5)  # and the worker serves the next call
    b.close()


def test_a_caller_that_gives_up_cancels_its_call():
    run = Recorder()
    b = MicroBatcher(run, max_units=4, max_wait_ms=0)
    fut = b.submit(units("x", 100_000))
    with pytest.raises(FutureTimeout):
        fut.result(timeout=5 * PASS_S)
    fut.cancel()
    wait_for(lambda: b.dropped == 1)
    ran_then = b.units_run
    time.sleep(10 * PASS_S)
    assert b.units_run == ran_then
    b.close()


def test_failures_stay_with_their_call():
    run = Recorder(fail_on="bad1")
    b = MicroBatcher(run, max_units=8, max_wait_ms=20)

    def broken():
        yield "ok"
        raise ValueError("tokenizer refused")

    good = b.submit(units("g", 5))
    bad = b.submit(units("bad", 3))
    odd = b.submit(broken())
    assert len(good.result(5)) == 5
    with pytest.raises(RuntimeError, match="model broke"):
        bad.result(5)
    with pytest.raises(ValueError, match="tokenizer refused"):
        odd.result(5)
    b.close()


# ---- the core: cost cap, latest, health -----------------------------------------------------------
def artifact(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "tagger_config.json").write_text(json.dumps({"model": {}}))
    return d


def tag_first_word(docs, cats):
    out = []
    for d in docs:
        if d.text.startswith("explode"):
            raise RuntimeError("CUDA error: device lost")
        w = d.text.split()[0]
        out.append(dataclasses.replace(d, entities=(Entity(0, len(w), w, cats[0].value, 0.9),)))
    return out


@pytest.fixture()
def world(tmp_path):
    home = tmp_path / "home"
    loads: list[str] = []
    broken: set[str] = set()

    def factory(path, device, batch):
        loads.append(Path(path).name)
        if Path(path).name in broken:
            raise E.FailedPrecondition(f"cannot load {Path(path).name}")
        return DocumentBackend(tag_first_word)

    def core(**kw):
        return TaggerCore(Settings(home=home), backend_factory=factory, limits=Limits(max_call_words=50), **kw)

    return {"home": home, "root": tmp_path, "loads": loads, "broken": broken, "core": core}


def test_a_call_over_the_cost_cap_names_the_setting(world):
    register_model(world["home"], artifact(world["root"], "a1"))
    core = world["core"]()
    core.start()
    assert core.extract([Document("d", "word " * 50)])[0][0].entities
    with pytest.raises(E.ResourceExhausted, match=r"60 words; the limit is 50 per call \(tagger.max_call_words\)"):
        core.extract([Document("d", "word " * 30), Document("e", "word " * 30)])
    core.close()


def test_following_latest_pinning_and_a_latest_that_cannot_load(world):
    home, root = world["home"], world["root"]
    m1 = register_model(home, artifact(root, "a1"))
    core = world["core"]()
    core.start()
    assert core.follows_latest and core.reconcile() is None
    m2 = register_model(home, artifact(root, "a2"))
    assert core.reconcile().id == m2.id and core.model_info().id == m2.id
    assert core.extract([Document("d", "x y")])[1] == m2.id
    # an explicit older version is pinned: a new latest does not move it
    core.load_model(m1.id)
    assert not core.follows_latest
    m3 = register_model(home, artifact(root, "a3"))
    assert core.reconcile() is None and core.model_info().id == m1.id
    # the version that is latest follows again
    core.load_model(m3.id)
    assert core.follows_latest
    # a latest that cannot be loaded: keep serving, say why, do not retry every poll
    m4 = register_model(home, artifact(root, "a4"))
    world["broken"].add(Path(m4.artifact_path).name)
    n = len(world["loads"])
    assert core.reconcile() is None and core.model_info().id == m3.id
    assert f"cannot load latest {m4.id}" in core.reconcile_error
    assert core.reconcile() is None and len(world["loads"]) == n + 1
    m5 = register_model(home, artifact(root, "a5"))
    assert core.reconcile().id == m5.id and core.reconcile_error is None
    core.close()


def test_the_poll_switches_on_its_own(world):
    register_model(world["home"], artifact(world["root"], "a1"))
    core = world["core"](reconcile_seconds=0.05)
    core.start()
    m2 = register_model(world["home"], artifact(world["root"], "a2"))
    wait_for(lambda: core.model_info().id == m2.id)
    core.close()


def test_health_probe_follows_the_model(world, monkeypatch):
    register_model(world["home"], artifact(world["root"], "a1"))
    core = world["core"](probe_timeout=2)
    with pytest.raises(E.Unavailable, match="no model loaded"):
        core.check_health()
    core.start()
    assert core.check_health()["model"]
    import tagger.serving

    monkeypatch.setattr(tagger.serving, "PROBE_TEXT", "explode now")  # the model breaks
    with pytest.raises(E.Unavailable, match="failed a probe: RuntimeError: CUDA error"):
        core.check_health()
    monkeypatch.undo()
    assert core.check_health()
    core.close()
    with pytest.raises(E.Unavailable):
        core.check_health()


def test_a_broken_worker_fails_its_callers_instead_of_leaving_them_waiting():
    b = MicroBatcher(Recorder(), max_units=4, max_wait_ms=0)

    def bug(active):
        raise ZeroDivisionError("a bug in the scheduler")

    b._take = bug
    with pytest.raises(E.Unavailable, match="worker failed"):
        b.submit(units("x", 3)).result(5)
    wait_for(lambda: not b.alive)
    with pytest.raises(E.Unavailable):
        b.submit(units("y", 1))
