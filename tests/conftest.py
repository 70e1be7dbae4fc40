"""Shared fixtures. The tiny random LLaMA keeps unit tests fast on 2 CPU cores: it has the real
SmolLM2 tokenizer (tests/fixtures/tokenizer) and architecture, with 2 layers of width 32."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import vaner  # noqa: F401 - first, so GRPC_ENABLE_FORK_SUPPORT is off before grpc loads (vaner/__init__.py)

FIXTURES = Path(__file__).parent / "fixtures"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# tests register their own models; the bundled default would otherwise become `latest` in empty registries
os.environ.setdefault("VANER_BUNDLED_MODEL", "none")


def make_tiny_llama(path: Path, seed: int = 0, layers: int = 2) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    tok = AutoTokenizer.from_pretrained(FIXTURES / "tokenizer")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    LlamaModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """Directory of a tiny random LLaMA (config.json + weights + tokenizer)."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture()
def vaner_home(tmp_path, monkeypatch) -> Path:
    """An isolated VANER_HOME (SQLite + embedded Qdrant) per test."""
    home = tmp_path / "home"
    monkeypatch.setenv("VANER_HOME", str(home))
    monkeypatch.delenv("VANER_DB_URL", raising=False)
    monkeypatch.delenv("VANER_QDRANT_URL", raising=False)
    return home


@pytest.fixture(scope="session")
def data_dir() -> Path:
    from vaner.corpus import default_data_dir

    d = default_data_dir()
    if not d.exists():
        pytest.skip(f"shared benchmark data not found at {d} (set VANER_DATA_DIR)")
    return d
