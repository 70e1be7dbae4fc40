"""Multi-type model (issue 11): one forward pass per sentence window tags all four categories;
training supervises only each sentence's own category; single-type models load and run as before."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch

from services.testing import make_tiny_model
from tagger.config import TaggerConfig, TrainConfig
from tagger.extract import Extractor, load_for_inference
from tagger.formats import Document
from tagger.instructions import InstructionTemplate
from tagger.model import VanerTagger, WordQuery, read_saved_config
from tagger.serving import ExtractorBackend, MicroBatcher
from tagger.train import TrainingData, epoch_batches, train
from tagger.warm_start import warm_start_config, widen_to_multi_type
from vaner.categories import Category
from vaner.corpus import Sentence
from vaner.errors import InvalidArgument

S1 = "BRCA1 mutations cause breast cancer in mice treated with tamoxifen .".split()
TEXT = "BRCA1 mutations cause breast cancer. Aspirin helped the mice."  # two sentences


@pytest.fixture(scope="module")
def multi(tiny_backbone):
    return VanerTagger.create(TaggerConfig(backbone=str(tiny_backbone), multi_type=True), device="cpu",
                              seed=0).eval()


@pytest.fixture(scope="module")
def single(tiny_backbone):
    return VanerTagger.create(TaggerConfig(backbone=str(tiny_backbone)), device="cpu", seed=0).eval()


class Rows:
    """Counts the windows (batch rows) that go through a tagger's forward pass."""

    def __init__(self, model):
        self.n = 0
        self._hook = model.register_forward_pre_hook(self._count)

    def _count(self, module, args):  # noqa: ARG002
        self.n += int(args[0].shape[0])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._hook.remove()


def _entities(docs):
    return [[(e.start, e.end, e.type) for e in d.entities] for d in docs]


def test_config_picks_the_multi_type_instruction_and_refuses_mismatches():
    assert TaggerConfig(multi_type=True).template == InstructionTemplate.named("paper", multi_type=True)
    assert TaggerConfig().template == InstructionTemplate()  # single-type default unchanged
    assert "{type}" not in InstructionTemplate.named("compact", multi_type=True).with_dataset
    with pytest.raises(InvalidArgument, match="multi-type model's instruction must not name a type"):
        TaggerConfig(multi_type=True, template=InstructionTemplate.named("compact"))
    with pytest.raises(InvalidArgument, match="single-type model's instruction must name"):
        TaggerConfig(template=InstructionTemplate.named("compact", multi_type=True))
    with pytest.raises(InvalidArgument, match="both contain"):
        InstructionTemplate("{type} in {dataset}", "entities:")
    paper = InstructionTemplate.named("paper", multi_type=True)
    assert paper.render(None, "ncbi") == ("Extract every Disease, Chemical, Gene and Species entity mentioned in "
                                          "the ncbi input. ##input:")


def test_multi_type_inputs_do_not_depend_on_the_category(multi):
    assert multi.encoder.prompt_ids(Category.DISEASE, "ncbi") == multi.encoder.prompt_ids(Category.GENE, "ncbi")
    assert multi.encoder.prompt_ids(Category.DISEASE, None) != multi.encoder.prompt_ids(Category.DISEASE, "ncbi")
    assert multi.head.out_features == 3 * len(Category) and multi.categories == tuple(Category)


def test_one_forward_per_sentence_window_for_four_types(multi, single):
    docs = [Document("d", TEXT)]
    results = {}
    for name, model, windows in (("multi", multi, 2), ("single", single, 8)):
        with Rows(model) as rows:
            results[name] = Extractor(model, overlap="all").extract(docs)  # all four types
        assert rows.n == windows, name
    # the serving path plans the same windows: one unit per sentence for a multi-type model
    for model, units in ((multi, 2), (single, 8)):
        ex = Extractor(model, overlap="all")
        backend = ExtractorBackend(ex)
        plan = backend.plan(docs, list(Category))
        batcher = MicroBatcher(backend.run, max_units=3)
        try:
            with Rows(model) as rows:
                served = plan.finish(batcher.submit(plan.units).result(timeout=60))
        finally:
            batcher.close()
        assert rows.n == units and batcher.units_run == units
        assert _entities(served) == _entities(ex.extract(docs))


def test_queries_share_a_pass_only_with_their_sentences_other_types(multi, single):
    s2 = ["Aspirin", "helped", "."]
    queries = [WordQuery(S1, Category.DISEASE), WordQuery(list(S1), Category.GENE), WordQuery(S1, Category.GENE, "ncbi"),
               WordQuery(s2, Category.DISEASE), WordQuery(S1, Category.CHEMICAL)]
    assert multi.window_groups(queries) == [[0, 1], [2], [3], [4]]  # a repeated sentence runs again
    assert single.window_groups(queries) == [[0], [1], [2], [3], [4]]
    with pytest.raises(InvalidArgument, match="unknown entity type"):
        multi.window_groups([WordQuery(S1, "Protein")])


def test_long_sentence_windows_are_shared_by_every_type(tiny_backbone):
    model = VanerTagger.create(TaggerConfig(backbone=str(tiny_backbone), max_length=32, multi_type=True),
                               device="cpu", seed=0)
    words = [f"w{i}" for i in range(100)]
    windows = len(model.query_windows(WordQuery(words, Category.GENE)))
    assert windows > 1
    with Rows(model) as rows:
        probs = model.predict_proba([WordQuery(words, c) for c in Category])
    assert rows.n == windows
    assert all(p.shape == (100, 3) and (p.sum(-1) > 0.99).all() for p in probs)


def test_each_query_reads_its_own_category_from_the_one_pass(multi):
    queries = [WordQuery(S1, c, "ncbi") for c in Category]
    probs = multi.predict_proba(queries)
    assert all(p.shape == (len(S1), 3) for p in probs)
    assert not np.allclose(probs[0], probs[2])  # a random head: categories differ
    alone = multi.predict_proba([WordQuery(S1, Category.GENE, "ncbi")])[0]
    np.testing.assert_allclose(alone, probs[2], atol=1e-6)
    with torch.no_grad():
        (window,) = multi.query_windows(queries[0])
        batch = multi.collate([window])
        raw = torch.softmax(multi(batch["input_ids"], batch["attention_mask"]), -1)[0, window.word_starts]
    assert raw.shape == (len(S1), len(Category), 3)
    np.testing.assert_allclose(raw[:, multi.category_slot(Category.SPECIES)].numpy(), probs[3], atol=1e-6)


def _head_grads(model, encoded):
    model.zero_grad(set_to_none=True)
    batch = model.collate(encoded)
    model.loss(batch).backward()
    return batch, model.head.weight.grad.view(len(Category), 3, -1), model.head.bias.grad.view(len(Category), 3)


def test_loss_only_sees_the_supervised_categories(tiny_backbone):
    model = VanerTagger.create(TaggerConfig(backbone=str(tiny_backbone), multi_type=True), device="cpu", seed=0)
    model.eval()  # no dropout: the loss is compared with a hand-computed one
    tags = ["O", "O", "O", "B", "I", "O", "O", "O", "O", "O", "O"]
    disease = model.encoder.encode(S1, Category.DISEASE, "ncbi", tags)
    batch, gw, gb = _head_grads(model, [disease])
    assert batch["labels"].shape == (1, len(disease.input_ids), len(Category))
    assert gw[0].abs().sum() > 0 and gb[0].abs().sum() > 0
    assert torch.all(gw[1:] == 0) and torch.all(gb[1:] == 0)  # Chemical, Gene, Species: no gradient
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["attention_mask"])[..., 0, :]
        manual = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), batch["labels"][..., 0].reshape(-1))
        assert float(model.loss(batch)) == pytest.approx(float(manual), rel=1e-6)
    # the same words labelled by two corpora of different categories: both rows count, nothing merged
    chemical = model.encoder.encode(S1, Category.CHEMICAL, "bc5cdr-chem", ["O"] * 9 + ["B", "O"])
    batch, gw, gb = _head_grads(model, [disease, chemical])
    labels = batch["labels"]
    assert (labels[0, :, 1] == -100).all() and (labels[1, :, 0] == -100).all()
    assert (labels[0, :, 0] != -100).sum() == len(S1) and (labels[1, :, 1] != -100).sum() == len(S1)
    assert gw[0].abs().sum() > 0 and gw[1].abs().sum() > 0
    assert torch.all(gw[2:] == 0) and torch.all(gb[2:] == 0)


def test_training_batches_keep_same_words_of_different_categories(tiny_backbone, tmp_path, multi):
    words = ("Aspirin", "causes", "colitis", ".")
    data = TrainingData([[Sentence(words, ("O", "O", "B", "O"), Category.DISEASE, "ncbi")],
                         [Sentence(words, ("B", "O", "O", "O"), Category.CHEMICAL, None)]], ["ncbi", "dbr"], {})
    cfg = TrainConfig(datasets=("ncbi",), output_dir=str(tmp_path), batch_size=4, mix_temperature=1.0)
    encoded = [e for b in epoch_batches(multi, data, cfg, 0, 8) for e in b]
    assert {e.category for e in encoded} == {Category.DISEASE, Category.CHEMICAL}


def test_save_load_round_trip_gives_identical_probabilities(multi, tmp_path):
    multi.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "tagger_config.json").read_text())
    assert meta["categories"] == ["Disease", "Chemical", "Gene", "Species"] and meta["model"]["multi_type"] is True
    again = VanerTagger.load(tmp_path / "m", device="cpu")
    assert again.config == multi.config and again.categories == multi.categories
    queries = [WordQuery(S1, c, d) for c in Category for d in ("ncbi", None)]
    for a, b in zip(multi.predict_proba(queries), again.predict_proba(queries), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    merged = load_for_inference(tmp_path / "m", device="cpu")
    for a, b in zip(multi.predict_proba(queries), merged.predict_proba(queries), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_single_type_configs_saved_before_multi_type_load_as_single_type(single, tmp_path):
    old = TaggerConfig(backbone="b").to_dict()
    del old["multi_type"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "tagger_config.json").write_text(json.dumps({"model": old}))
    assert read_saved_config(tmp_path / "old") == TaggerConfig(backbone="b")
    assert not read_saved_config(tmp_path / "old").multi_type
    single.save(tmp_path / "s")  # a real artifact, its config rewritten as an older vaner wrote it
    path = tmp_path / "s" / "tagger_config.json"
    meta = json.loads(path.read_text())
    del meta["model"]["multi_type"]
    path.write_text(json.dumps(meta))
    again = VanerTagger.load(tmp_path / "s", device="cpu")
    assert again.categories == () and again.head.out_features == 3
    q = [WordQuery(S1, Category.DISEASE, "ncbi"), WordQuery(S1, Category.GENE, None)]
    for a, b in zip(single.predict_proba(q), again.predict_proba(q), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_multi_type_artifact_must_list_its_head_categories(multi, tmp_path):
    multi.save(tmp_path / "m")
    path = tmp_path / "m" / "tagger_config.json"
    meta = json.loads(path.read_text())
    del meta["categories"]
    path.write_text(json.dumps(meta))
    with pytest.raises(InvalidArgument, match="must list its head's 'categories'"):
        VanerTagger.load(tmp_path / "m", device="cpu")


def test_extractor_returns_several_categories_from_one_pass(tiny_backbone, tmp_path):
    art = make_tiny_model(tiny_backbone, tmp_path / "m", tag_every_word=True, multi_type=True)
    tagger = load_for_inference(art, device="cpu")
    with torch.no_grad():  # Disease and Gene say B for every word, Chemical and Species say O
        for c in (Category.CHEMICAL, Category.SPECIES):
            k = tagger.category_slot(c)
            tagger.head.bias[3 * k: 3 * k + 3] = torch.tensor([10.0, 0.0, 0.0])
    text = "BRCA1 causes cancer."
    with Rows(tagger) as rows:
        (doc,) = Extractor(tagger, overlap="all").extract([Document("d", text)])
    assert rows.n == 1
    assert [(e.text, e.type) for e in doc.entities] == [
        (w, t) for w in ("BRCA1", "causes", "cancer", ".") for t in ("Disease", "Gene")]
    assert all(text[e.start:e.end] == e.text and e.score > 0.99 for e in doc.entities)


def test_training_a_tiny_multi_type_model_lowers_the_loss(tiny_backbone, tmp_path):
    def conll(path, entity, tag):
        lines = []
        for i in range(30):
            lines += [f"Patients{i}\tO", "with\tO", f"{entity}\tB-{tag}", "fibrosis\tI-" + tag, ".\tO", ""]
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    cfg = TrainConfig(train_files=((conll(tmp_path / "d.tsv", "cystic", "Disease"), "Disease"),
                                   (conll(tmp_path / "c.tsv", "aspirin", "Chemical"), "Chemical")),
                      output_dir=str(tmp_path / "run"),
                      model=TaggerConfig(backbone=str(tiny_backbone), max_length=48, multi_type=True),
                      epochs=2, steps_per_epoch=6, batch_size=4, lr=5e-3, head_lr=1e-2, checkpoint_every=100,
                      seed=3, dev_max_sentences=10, device="cpu")
    res = train(cfg)
    losses = [h["loss"] for h in res.history if "loss" in h]
    assert losses[-1] < losses[0]
    assert set(res.dev_metrics["datasets"]) == {"d.tsv", "c.tsv"}
    best = VanerTagger.load(res.artifact_dir, device="cpu")
    assert best.config.multi_type and best.categories == tuple(Category)


def _saved(tmp_path, name, **model):
    art = tmp_path / name
    art.mkdir()
    (art / "tagger_config.json").write_text(json.dumps({"model": TaggerConfig(backbone="tiny", **model).to_dict()}))
    return art


def test_warm_start_refuses_to_switch_between_single_and_multi_type(tmp_path):
    single_art = _saved(tmp_path, "single", template=InstructionTemplate.named("compact"))
    with pytest.raises(InvalidArgument, match="is a single-type model .* cannot be continued as a multi-type"):
        warm_start_config(single_art, {"multi_type": True}, source="m1", hint="pass --from-scratch")
    multi_art = _saved(tmp_path, "multi", multi_type=True)
    with pytest.raises(InvalidArgument, match="is a multi-type model .* as a single-type"):
        warm_start_config(multi_art, {"multi_type": False}, source="m2", hint="pass --from-scratch")
    assert warm_start_config(multi_art, {"multi_type": True}, source="m2", hint="h").multi_type
    with pytest.raises(InvalidArgument, match="do not fit m1: a single-type model's instruction"):
        warm_start_config(single_art, {"template": InstructionTemplate.named("compact", True)}, source="m1", hint="h")


def test_a_single_type_model_seeds_a_multi_type_one(single, tmp_path):
    """vaner train --init-from SINGLE --multi-type: same adapter, every head block a copy of the
    single head; the reverse and retrain's kind switch stay refused."""
    single.save(tmp_path / "single")
    config = warm_start_config(tmp_path / "single", {"multi_type": True}, source="m1", hint="h", widen=True)
    assert config.multi_type and config.template == InstructionTemplate.named("paper", multi_type=True)
    assert config.num_layers == single.config.num_layers and config.lora_r == single.config.lora_r
    with pytest.raises(InvalidArgument, match="cannot be continued as a multi-type"):
        warm_start_config(tmp_path / "single", {"multi_type": True}, source="m1", hint="h")
    with pytest.raises(InvalidArgument, match="disagree with m1"):
        warm_start_config(tmp_path / "single", {"multi_type": True, "lora_r": single.config.lora_r + 1},
                          source="m1", hint="h", widen=True)
    wide = widen_to_multi_type(single, config)
    assert wide.backbone is single.backbone and wide.categories == tuple(Category)
    hidden = torch.randn(2, 5, single.backbone.config.hidden_size)
    with torch.no_grad():
        narrow_logits, wide_logits = single.head(hidden), wide.head(hidden).unflatten(-1, wide.word_shape)
    for slot in range(len(wide.categories)):
        torch.testing.assert_close(wide_logits[:, :, slot], narrow_logits)
    with pytest.raises(InvalidArgument):
        widen_to_multi_type(wide, config)


def test_train_cli_multi_type_flag_and_warm_start(vaner_home, tmp_path, capsys, monkeypatch):
    import tagger.train
    import tagger.warm_start
    from vaner.cli import main

    seen = {}

    def fake_train(config, *, extra_sentences=(), progress=None, resume=True, model=None):
        seen["config"], seen["model"] = config, model
        return types.SimpleNamespace(run_dir=tmp_path / "run", artifact_dir=tmp_path / "run" / "best",
                                     dev_metrics={"f1": 1.0}, steps=1, tokens_per_second=1.0)

    monkeypatch.setattr(tagger.train, "train", fake_train)
    monkeypatch.setattr(tagger.warm_start, "load_trainable", lambda artifact, device="auto": "warm")
    base = ["train", "--no-register", "--json", "--output-dir", str(tmp_path / "run"), "--train", "a.tsv",
            "--type", "Gene"]
    assert main([*base, "--multi-type", "--instruction", "compact"]) == 0
    assert seen["config"].model.multi_type
    assert seen["config"].model.template == InstructionTemplate.named("compact", multi_type=True)
    assert main(base) == 0 and not seen["config"].model.multi_type  # off by default
    capsys.readouterr()

    # a single-type model seeds a multi-type one: the multi-type form of its wording, the head widened
    single_art = _saved(tmp_path, "single")
    monkeypatch.setattr(tagger.warm_start, "widen_to_multi_type", lambda model, config: ("wide", model))
    assert main([*base, "--init-from", str(single_art), "--multi-type"]) == 0
    assert seen["config"].model.multi_type and seen["model"] == ("wide", "warm")
    assert seen["config"].model.template == InstructionTemplate.named("paper", multi_type=True)
    assert main([*base, "--init-from", str(single_art), "--multi-type", "--instruction", "compact"]) == 0
    assert seen["config"].model.template == InstructionTemplate.named("compact", multi_type=True)
    capsys.readouterr()
    # --instruction names a wording; a warm start from a multi-type model takes its multi-type form
    multi_art = _saved(tmp_path, "multi", multi_type=True, template=InstructionTemplate.named("compact", True))
    assert main([*base, "--init-from", str(multi_art), "--instruction", "compact"]) == 0
    assert seen["config"].model.multi_type and seen["model"] == "warm"
