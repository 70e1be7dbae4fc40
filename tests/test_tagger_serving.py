"""One inference path: the gRPC service loads a model the way ``vaner extract`` does (LoRA merged)
and returns the same entities for the same documents (tiny model, real port)."""

from __future__ import annotations

import json

import pytest
import torch

from clients import TaggerClient
from services.config import ServeConfig
from services.server import start_service
from services.tagger_servicer import TaggerServicer
from tagger.config import TaggerConfig
from tagger.model import VanerTagger
from tagger.serving import TaggerCore
from vaner.settings import Settings
from vaner.v1 import tagger_pb2_grpc

TEXTS = ["Naïve patients with BRCA1-associated breast cancer were given aspirin.",
         "Escherichia coli sepsis in mice. Cisplatin caused renal failure in two patients."]


@pytest.fixture(scope="module")
def lora_model(tiny_backbone, tmp_path_factory):
    """A tiny tagger whose LoRA weights are non-zero, so merged and unmerged weights differ."""
    out = tmp_path_factory.mktemp("lora-model")
    tagger = VanerTagger.create(TaggerConfig(backbone=str(tiny_backbone)), device="cpu", seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in tagger.backbone.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    tagger.save(out)
    return out


def _lora_modules(tagger: VanerTagger) -> list[str]:
    return [n for n, _ in tagger.backbone.named_modules() if "lora_" in n]


def test_load_for_inference_merges_and_evaluates(lora_model):
    from tagger.extract import load_for_inference

    assert _lora_modules(VanerTagger.load(lora_model, device="cpu"))  # saved with adapters
    tagger = load_for_inference(lora_model, device="cpu")
    assert not _lora_modules(tagger) and not tagger.training


def test_service_and_cli_return_the_same_entities_from_merged_weights(lora_model, vaner_home, tmp_path, capsys,
                                                                      monkeypatch):
    import tagger.extract
    from vaner.cli import main

    served = []
    real_load = tagger.extract.load_for_inference

    def recording_load(*args, **kwargs):
        served.append(real_load(*args, **kwargs))
        return served[-1]

    monkeypatch.setattr(tagger.extract, "load_for_inference", recording_load)
    cli_entities = []
    for i, text in enumerate(TEXTS):
        path = tmp_path / f"doc{i}.txt"
        path.write_text(text, encoding="utf-8")
        assert main(["extract", "--input", str(path), "--model", str(lora_model), "--no-text"]) == 0
        cli_entities.append(json.loads(capsys.readouterr().out)[0]["entities"])
    assert any(cli_entities), "the tiny model found nothing: the comparison would be empty"

    def build(server, config):
        core = TaggerCore(Settings(home=vaner_home), model_ref=str(lora_model), device="cpu")
        core.start()
        tagger_pb2_grpc.add_TaggerServicer_to_server(TaggerServicer(core), server)
        return [core.close]

    running = start_service("tagger", ServeConfig.from_dict({}, env={}), port=0, builders={"tagger": build})
    try:
        with TaggerClient(f"127.0.0.1:{running.port}", timeout=120) as client:
            docs = client.extract([(f"doc{i}", t) for i, t in enumerate(TEXTS)])
    finally:
        running.stop(1)
    assert len(served) == len(TEXTS) + 1  # every CLI run and the service loaded through the one loader
    assert not _lora_modules(served[-1])  # the service runs merged weights
    for got, want in zip(docs, cli_entities, strict=True):
        assert [(e.start, e.end, e.text, e.type) for e in got.entities] == \
            [(e["start"], e["end"], e["text"], e["type"]) for e in want]
        assert [e.score for e in got.entities] == pytest.approx([e["score"] for e in want], abs=1e-5)
