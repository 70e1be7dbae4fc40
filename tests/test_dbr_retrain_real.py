"""`Retrainer` on the real pieces: KnowledgeBase (embedded Qdrant, hashing encoder), tagger.train on
the tiny random LLaMA, ModelRegistry on SQLite, the real gate evaluator. Checks the contracts (warm
start continues the current model exactly; both models scored on the same sentences), not model
quality."""

from __future__ import annotations

import json

import pytest

from retrieval.gate import evaluate_artifact
from retrieval.retrain import Retrainer, RetrainRequest
from tests.test_dbr_fakes import write_data_dir
from vaner.categories import Category
from vaner.settings import Settings

kb_testing = pytest.importorskip("kb_ingest.testing")

STEPS = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "dev_max_sentences": 4, "device": "cpu"}


@pytest.mark.integration
def test_retrain_end_to_end_on_real_components(tmp_path, tiny_backbone):
    import torch

    from kb_ingest.kb import KnowledgeBase
    from tagger.config import TrainConfig
    from tagger.model import VanerTagger
    from tagger.registry import ModelRegistry
    from tagger.train import epoch_batches, load_training_data

    settings = Settings(home=tmp_path / "home").ensure()
    data = write_data_dir(tmp_path / "data")
    enc = kb_testing.hash_encoder()
    kb = KnowledgeBase(settings, encoder_loader=lambda name: enc)
    kb.ingest_dataset([data / "ncbi" / "train.tsv"], Category.DISEASE)
    snap = kb.ingest_dataset([data / "s800" / "train.tsv"], Category.SPECIES)
    registry = ModelRegistry(settings)
    told: list[str] = []
    # no dropout, so that a training step's loss is a function of the weights and the batch alone
    model = {"backbone": str(tiny_backbone), "max_length": 48, "lora_dropout": 0.0, "head_dropout": 0.0}
    try:
        # 1. no current model: from scratch, promoted without a comparison
        req = RetrainRequest(kb_snapshot="latest", datasets=("ncbi", "s800"), data_dir=str(data),
                             output_dir=str(tmp_path / "run"), train_overrides={"model": model, **STEPS})
        out = Retrainer(settings, kb=kb, registry=registry, notifier=told.append).run(req)
        assert out.promoted and told == [out.model.id] and out.warm_start is None
        rec = registry.resolve("latest")
        assert rec.id == out.model.id and rec.kb_snapshot == snap.id
        assert rec.hyperparameters["dbr"]["sentences"] > 0

        # 2. default retrain: warm start from it, on its datasets, gated on the same dev sentences
        scored: dict[str, dict[str, list[str]]] = {}

        def recording(artifact, sentences, device, progress):
            scored[str(artifact)] = {d: [s.source for s in v] for d, v in sentences.items()}
            return evaluate_artifact(artifact, sentences, device, progress)

        run2 = tmp_path / "run2"
        req2 = RetrainRequest(kb_snapshot=snap.id, data_dir=str(data), output_dir=str(run2), train_overrides=STEPS,
                              promote_margin=0.0)
        out2 = Retrainer(settings, kb=kb, registry=registry, evaluator=recording).run(req2)
        assert out2.warm_start == out.model.id and len(registry.list()) == 2
        assert list(scored) == [str(rec.artifact_path), str(run2 / "best")]
        first, second = scored.values()
        assert first == second and set(first) == {"ncbi", "s800"}
        gate = out2.to_dict()["gate"]
        assert [r["dataset"] for r in gate["datasets"]] == ["ncbi", "s800"] and gate["current"] == out.model.id
        rule = all(r["delta"] >= 0 for r in gate["datasets"]) and gate["macro"]["delta"] >= 0
        assert out2.promoted is rule
        assert (registry.resolve("latest").id == out2.model.id) is rule
        assert registry.resolve(out2.model.id).metrics["gate"] == gate

        # 3. the warm start continued the current model: the first step's loss is the current
        #    model's loss on that same batch (and not a fresh model's)
        cfg = TrainConfig.from_dict(json.loads((run2 / "best" / "tagger_config.json").read_text())["train_config"])
        batches_data = load_training_data(cfg, out2.dbr_set.load())
        current = VanerTagger.load(rec.artifact_path, device="cpu", trainable=True)
        assert cfg.model == current.config  # the model settings came from the model it continued
        batch = current.collate(epoch_batches(current, batches_data, cfg, 0, cfg.steps_per_epoch)[0])
        with torch.no_grad():
            expected = float(current.loss(batch))
            fresh = float(VanerTagger.create(cfg.model, device="cpu", seed=cfg.seed).loss(batch))
        history = [json.loads(line) for line in (run2 / "history.jsonl").read_text().splitlines()]
        assert history[0]["step"] == 1 and history[0]["loss"] == pytest.approx(expected, abs=1e-4)
        assert fresh != pytest.approx(expected, abs=1e-3)
    finally:
        kb.close()
