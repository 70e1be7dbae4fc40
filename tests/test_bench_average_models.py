"""bench/average_models.py: the average of two saved taggers loads and holds the mean of their tensors."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from services.testing import make_tiny_model
from tagger.model import VanerTagger
from tests.bench_modules import load_bench


def test_average_of_two_models_is_their_mean_and_loads(tmp_path, tiny_backbone):
    bench = load_bench("average_models")
    a = make_tiny_model(tiny_backbone, tmp_path / "a", seed=1, multi_type=True)
    b = make_tiny_model(tiny_backbone, tmp_path / "b", seed=2, multi_type=True)
    out = tmp_path / "avg"
    assert bench.main(["--models", f"{a},{b}", "--out", str(out)]) == 0
    for name in bench.FILES:
        ta, tb, tm = (load_file(p / name) for p in (a, b, out))
        assert all(torch.allclose(tm[k], (ta[k] + tb[k]) / 2) for k in ta)
    VanerTagger.load(out, device="cpu")
    single = make_tiny_model(tiny_backbone, tmp_path / "single", seed=3)
    assert bench.main(["--models", f"{a},{single}", "--out", str(tmp_path / "refused")]) == 2
