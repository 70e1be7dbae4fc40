"""`Retrainer` on the real pieces: KnowledgeBase (embedded Qdrant, hashing encoder), tagger.train on
the tiny random LLaMA, ModelRegistry on SQLite. Checks the contracts, not model quality."""

from __future__ import annotations

import pytest

from retrieval.retrain import Retrainer, RetrainRequest
from tests.test_dbr_fakes import write_data_dir
from vaner.categories import Category
from vaner.settings import Settings

kb_testing = pytest.importorskip("kb_ingest.testing")


@pytest.mark.integration
def test_retrain_end_to_end_on_real_components(tmp_path, tiny_backbone):
    from kb_ingest.kb import KnowledgeBase
    from tagger.registry import ModelRegistry

    settings = Settings(home=tmp_path / "home").ensure()
    data = write_data_dir(tmp_path / "data")
    enc = kb_testing.hash_encoder()
    kb = KnowledgeBase(settings, encoder_loader=lambda name: enc)
    kb.ingest_dataset([data / "ncbi" / "train.tsv"], Category.DISEASE)
    snap = kb.ingest_dataset([data / "s800" / "train.tsv"], Category.SPECIES)
    registry = ModelRegistry(settings)
    told: list[str] = []
    overrides = {"model": {"backbone": str(tiny_backbone), "max_length": 48}, "epochs": 1, "steps_per_epoch": 2,
                 "batch_size": 2, "dev_max_sentences": 4, "device": "cpu"}
    req = RetrainRequest(kb_snapshot="latest", datasets=("ncbi", "s800"), data_dir=str(data),
                         output_dir=str(tmp_path / "run"), train_overrides=overrides)
    try:
        out = Retrainer(settings, kb=kb, registry=registry, notifier=told.append).run(req)
        assert out.promoted and told == [out.model.id]
        rec = registry.resolve("latest")
        assert rec.id == out.model.id and rec.kb_snapshot == snap.id
        assert rec.hyperparameters["dbr"]["sentences"] > 0
        # a second retrain with an impossible gate is registered but leaves latest alone
        req2 = RetrainRequest(kb_snapshot=snap.id, datasets=("ncbi", "s800"), data_dir=str(data),
                              output_dir=str(tmp_path / "run2"), train_overrides=overrides, promote_margin=0.0)
        first_f1 = out.new_f1

        class Worse:
            def __call__(self, config, **kw):
                from tagger.train import train

                res = train(config, **kw)
                res.dev_metrics["f1"] = (first_f1 or 0) - 10
                res.dev_metrics["datasets"] = {k: {**v, "f1": v["f1"] - 10}
                                               for k, v in res.dev_metrics["datasets"].items()}
                return res

        out2 = Retrainer(settings, kb=kb, registry=registry, train_fn=Worse()).run(req2)
        assert not out2.promoted and registry.resolve("latest").id == out.model.id
        assert len(registry.list()) == 2
    finally:
        kb.close()
