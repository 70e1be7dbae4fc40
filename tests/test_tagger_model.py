"""The two properties VANER's tagger rests on: attention is bidirectional, and padding is
invisible (a sentence's logits do not depend on what else is in its batch)."""

from __future__ import annotations

import pytest
import torch

from tagger.config import TaggerConfig
from tagger.model import VanerTagger, WordQuery, length_batches
from vaner.categories import Category
from vaner.errors import FailedPrecondition, InvalidArgument

S1 = "Familial adenomatous polyposis is an inherited cancer syndrome .".split()
S2 = "Familial adenomatous polyposis is an inherited cancer gene .".split()


@pytest.fixture(scope="module")
def tiny(tiny_backbone):
    return VanerTagger.create(TaggerConfig(backbone=str(tiny_backbone)), device="cpu", seed=0).eval()


@pytest.fixture(scope="module")
def tiny_causal(tiny_backbone):
    return VanerTagger.create(TaggerConfig(backbone=str(tiny_backbone), attention="causal"), device="cpu",
                              seed=0).eval()


def test_later_token_changes_earlier_output(tiny):
    p = tiny.predict_proba([WordQuery(S1, Category.DISEASE, "ncbi"), WordQuery(S2, Category.DISEASE, "ncbi")])
    assert not torch.allclose(torch.tensor(p[0][0]), torch.tensor(p[1][0]), atol=1e-7)


def test_causal_mode_ignores_later_tokens(tiny_causal):
    p = tiny_causal.predict_proba([WordQuery(S1, Category.DISEASE, "ncbi"), WordQuery(S2, Category.DISEASE, "ncbi")])
    assert torch.allclose(torch.tensor(p[0][:-2]), torch.tensor(p[1][:-2]), atol=1e-6)


@pytest.mark.parametrize("fixture", ["tiny", "tiny_causal"])
def test_same_logits_alone_and_in_padded_batch(fixture, request):
    model = request.getfixturevalue(fixture)
    short = WordQuery(["BRCA1", "mutations"], Category.GENE, None)
    long = WordQuery(S1 * 3, Category.DISEASE, "ncbi")
    alone = model.predict_proba([short])[0]
    batched = model.predict_proba([long, short, long])[1]
    assert torch.allclose(torch.tensor(alone), torch.tensor(batched), atol=1e-5)


def test_only_first_subtoken_and_no_instruction_token_is_labelled(tiny):
    enc = tiny.encoder.encode(["acetylsalicylic", "acid"], Category.CHEMICAL, None, ["B", "I"])
    labelled = [i for i, lab in enumerate(enc.labels) if lab != -100]
    assert labelled == enc.word_starts
    assert len(tiny.encoder.word_ids("acetylsalicylic")) > 1
    prompt_len = len(tiny.encoder.prompt_ids(Category.CHEMICAL, None))
    assert all(i >= prompt_len for i in labelled)


def test_long_sentence_is_covered_by_windows(tiny_backbone):
    model = VanerTagger.create(TaggerConfig(backbone=str(tiny_backbone), max_length=32), device="cpu", seed=0)
    words = [f"w{i}" for i in range(100)]
    probs = model.predict_proba([WordQuery(words, Category.SPECIES, None)])[0]
    assert probs.shape == (100, 3)
    assert (probs.sum(-1) > 0.99).all()


def test_save_and_load_round_trip(tiny, tmp_path):
    tiny.save(tmp_path / "m")
    again = VanerTagger.load(tmp_path / "m", device="cpu")
    q = [WordQuery(S1, Category.DISEASE, "ncbi")]
    assert torch.allclose(torch.tensor(tiny.predict_proba(q)[0]), torch.tensor(again.predict_proba(q)[0]), atol=1e-6)


def test_bad_config_is_rejected(tiny_backbone):
    with pytest.raises(InvalidArgument):
        TaggerConfig(attention="sideways")
    with pytest.raises(InvalidArgument):
        VanerTagger.create(TaggerConfig(backbone=str(tiny_backbone), lora_targets=("nope",)), device="cpu")


def test_4bit_needs_cuda(tiny_backbone):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(FailedPrecondition):
        VanerTagger.create(TaggerConfig(backbone=str(tiny_backbone), quantize_4bit=True), device="cpu")


def test_length_batches_cut_where_padding_would_exceed_the_slack():
    lengths = [10] * 8 + [11, 12] + [40] * 8 + [100]
    batches = length_batches(lengths, batch_size=32, max_batch_tokens=8192)
    assert [i for b in batches for i in b] == list(range(len(lengths)))  # every row once, in order
    for b in batches:
        rows = [lengths[i] for i in b]
        assert len(rows) <= 8 or max(rows) * len(rows) <= 1.05 * sum(rows)
    assert [len(b) for b in batches] == [8, 8, 3]  # min_rows keeps a batch wide even when it pads
    # the caps still hold: rows per batch and padded tokens per batch
    assert all(len(b) <= 4 for b in length_batches([10] * 9, batch_size=4, max_batch_tokens=8192))
    assert [len(b) for b in length_batches([100] * 5, batch_size=32, max_batch_tokens=250)] == [2, 2, 1]
    assert length_batches([], 32, 8192) == []
