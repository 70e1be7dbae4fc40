"""Training loop on the tiny model: it learns, it is deterministic, it resumes after a kill."""

from __future__ import annotations

import json

import pytest
import torch

from tagger.config import TaggerConfig, TrainConfig
from tagger.mixing import epoch_plan, length_bucketed_batches, source_weights
from tagger.train import instruction_datasets, train
from vaner.categories import Category
from vaner.corpus import Sentence
from vaner.errors import InvalidArgument


def _conll(path, n=40):
    lines = []
    for i in range(n):
        lines += [f"Patients{i}\tO", "with\tO", "cystic\tB-Disease", "fibrosis\tI-Disease", ".\tO", ""]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cfg(tiny_backbone, tmp_path, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    base = dict(train_files=((str(_conll(tmp_path / "d.tsv")), "Disease"),), output_dir=str(tmp_path / "run"),
                model=TaggerConfig(backbone=str(tiny_backbone), max_length=48), epochs=2, steps_per_epoch=6,
                batch_size=4, lr=5e-3, head_lr=1e-2, checkpoint_every=3, seed=3, dev_max_sentences=10, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_train_learns_and_writes_artifacts(tiny_backbone, tmp_path):
    res = train(_cfg(tiny_backbone, tmp_path, epochs=3))
    assert (res.artifact_dir / "tagger_config.json").exists()
    assert (res.run_dir / "learning_curve.png").stat().st_size > 1000
    losses = [h["loss"] for h in res.history if "loss" in h]
    assert losses[-1] < losses[0]
    assert res.dev_metrics["f1"] > 50


def test_training_is_deterministic(tiny_backbone, tmp_path):
    a = train(_cfg(tiny_backbone, tmp_path / "a", epochs=1))
    b = train(_cfg(tiny_backbone, tmp_path / "b", epochs=1))
    assert [h.get("loss") for h in a.history] == [h.get("loss") for h in b.history]


def test_resume_after_kill_replays_the_same_run(tiny_backbone, tmp_path, monkeypatch):
    full = train(_cfg(tiny_backbone, tmp_path / "full"))
    import tagger.train as tr

    calls = {"n": 0}
    real_step = torch.optim.AdamW.step

    def dying_step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 8:  # after the checkpoint at step 6 (epoch 2, step 0 of the new epoch... )
            raise KeyboardInterrupt("killed")
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        tr.train(_cfg(tiny_backbone, tmp_path / "part"))
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    resumed = tr.train(_cfg(tiny_backbone, tmp_path / "part"))
    assert resumed.steps == full.steps
    fl = [h["loss"] for h in full.history if "loss" in h]
    rl = [h["loss"] for h in resumed.history if "loss" in h]
    assert rl == pytest.approx(fl, rel=1e-4)
    meta = json.loads((resumed.artifact_dir / "tagger_config.json").read_text())
    assert meta["dev_metrics"]["f1"] == pytest.approx(full.dev_metrics["f1"], abs=1e-6)


def test_mixing_weights_and_plan():
    w = source_weights([100, 10000], 0.5)
    assert w[0] == pytest.approx(0.0909, abs=1e-3)
    src = [[Sentence(("a",), ("O",), Category.GENE, "x")] * 3, [Sentence(("b",), ("B",), Category.GENE, "y")] * 50]
    p1 = epoch_plan(src, 40, 1.0, seed=1, epoch=0)
    assert p1 == epoch_plan(src, 40, 1.0, seed=1, epoch=0)
    batches = length_bucketed_batches([5, 1, 9, 3, 7, 2], 2, seed=0, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(6))


def test_nothing_to_train_is_an_error():
    with pytest.raises(InvalidArgument):
        TrainConfig()


def test_dbr_as_extra_sentences_keeps_the_dataset_plan(tiny_backbone, tmp_path):
    from tagger.train import epoch_sentences, load_training_data, steps_per_epoch_for

    cfg = _cfg(tiny_backbone, tmp_path, steps_per_epoch=None, dbr_budget="extra")
    dbr = [Sentence(("aspirin", str(i)), ("B", "O"), Category.DISEASE, None) for i in range(60)]
    plain, with_dbr = load_training_data(cfg), load_training_data(cfg, dbr)
    assert len(with_dbr.extra) == with_dbr.dataset_size == 36  # capped at one per training sentence
    for epoch in range(2):
        a = epoch_sentences(plain, cfg, epoch, steps_per_epoch_for(cfg, plain))
        b = epoch_sentences(with_dbr, cfg, epoch, steps_per_epoch_for(cfg, with_dbr))
        assert [s for s, flag in b if flag] == [s for s, _ in a] and all(flag for _, flag in a)
        assert len([s for s, flag in b if not flag]) == 36 and set(s for s, flag in b if not flag) <= set(dbr)
    assert steps_per_epoch_for(cfg, with_dbr) == 2 * steps_per_epoch_for(cfg, plain) == 18
    shared = _cfg(tiny_backbone, tmp_path, steps_per_epoch=None)
    data = load_training_data(shared, dbr)
    assert data.source_names[-1] == "dbr" and not data.extra and steps_per_epoch_for(shared, data) == 18


def test_patience_stops_and_a_stopped_run_stays_stopped(tiny_backbone, tmp_path, monkeypatch):
    cfg = _cfg(tiny_backbone, tmp_path, epochs=3, lr=1e-12, head_lr=1e-12, eval_every=4, patience=2,
               lr_schedule="constant", checkpoint_every=100)
    res = train(cfg)
    evals = [h for h in res.history if "dev_f1" in h]
    assert res.stopped_early and res.steps == 3 and len(evals) == 3
    assert [h["dataset_sentences"] for h in evals] == [4, 8, 12] and res.dataset_sentences == 12
    calls = {"n": 0}
    real_step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: calls.__setitem__("n", calls["n"] + 1)
                        or real_step(self, *a, **k))
    again = train(cfg)
    assert calls["n"] == 0 and again.steps == 3 and again.stopped_early


@pytest.mark.parametrize("bad", [{"dbr_budget": "both"}, {"eval_every": 0}, {"patience": -1},
                                 {"lr_schedule": "cosine"}, {"dbr_ratio": -0.5},
                                 {"free_instruction_share": 1.0}, {"free_instruction_share": -0.1}])
def test_new_training_settings_are_validated(tmp_path, bad):
    with pytest.raises(InvalidArgument):
        TrainConfig(datasets=("ncbi",), **bad)


def test_a_seeded_share_of_sentences_gets_the_dataset_free_instruction():
    sents = [Sentence(("w", str(i)), ("O", "O"), Category.DISEASE, "ncbi") for i in range(2000)]
    sents += [Sentence(("dbr",), ("O",), Category.GENE, None)] * 10
    assert instruction_datasets(sents, TrainConfig(datasets=("ncbi",)), 0) == [s.dataset for s in sents]
    cfg = TrainConfig(datasets=("ncbi",), free_instruction_share=0.25, seed=5)
    first = instruction_datasets(sents, cfg, 0)
    assert first == instruction_datasets(sents, cfg, 0)  # a pure function of (config, epoch)
    assert first != instruction_datasets(sents, cfg, 1)  # a different share each epoch
    assert 0.2 < first[:2000].count(None) / 2000 < 0.3
    assert set(first[:2000]) == {"ncbi", None} and first[2000:] == [None] * 10  # DBR stays dataset-free
