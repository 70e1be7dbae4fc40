"""``vaner eval|extract|models`` through the real argument parser and error path (tiny model)."""

from __future__ import annotations

import argparse
import json

import pytest

from tagger import cli_infer
from tagger.config import TaggerConfig
from tagger.formats import parse_pubtator
from tagger.model import VanerTagger
from vaner.cli_common import add_global_args, run_cli

NCBI_SAMPLE = "Breast\tB-Disease\ncancer\tI-Disease\nrisk\tO\n\nBRCA1\tO\nmutations\tO\n.\tO\n\n"


def main(argv, linker=None):
    parser = argparse.ArgumentParser(prog="vaner")
    add_global_args(parser)
    cli_infer.register(parser.add_subparsers(dest="command"), linker=linker)
    return run_cli(parser, argv)


@pytest.fixture(scope="module")
def tiny_model(tiny_backbone, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-model")
    VanerTagger.create(TaggerConfig(backbone=str(tiny_backbone)), device="cpu", seed=0).save(out)
    return out


@pytest.fixture()
def registered(tiny_model, vaner_home):
    from tagger.registry import ModelRegistry
    from vaner.settings import Settings

    reg = ModelRegistry(Settings.from_env(), bundled_default=None)
    rec = reg.register(tiny_model, backbone="tiny", datasets=["ncbi"], template={}, hyperparameters={},
                       metrics={"dev": {"f1": 1.0}}, command="test", promote=True)
    return reg, rec


def test_extract_json_from_text(tiny_model, capsys):
    text = "Naïve patients with BRCA1-associated breast cancer (α-synuclein)."
    assert main(["extract", text, "--model", str(tiny_model), "--overlap", "all"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["id"] == "doc1" and out[0]["text"] == text
    for e in out[0]["entities"]:
        assert text[e["start"]:e["end"]] == e["text"] and set(e) >= {"start", "end", "text", "type", "score"}


def test_extract_pubtator_in_and_out(tiny_model, tmp_path, capsys):
    src = tmp_path / "in.pubtator"
    src.write_text("1|t|Aspirin and fever.\n1|a|Patients with glioma.\n\n2|t|Second doc\n2|a|\n")
    out_path = tmp_path / "out.pubtator"
    assert main(["extract", "--input", str(src), "--input-format", "pubtator", "--format", "pubtator",
                 "--types", "Disease,Chemical", "--model", str(tiny_model), "-o", str(out_path)]) == 0
    docs = parse_pubtator(out_path.read_text())
    assert [d.id for d in docs] == ["1", "2"]
    assert docs[0].text == "Aspirin and fever. Patients with glioma."
    assert all(e.type in ("Disease", "Chemical") for d in docs for e in d.entities)


@pytest.mark.parametrize("fmt", ["bioc", "conll"])
def test_extract_other_output_formats(tiny_model, capsys, fmt):
    assert main(["extract", "Fever and cough.", "--model", str(tiny_model), "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert ("<collection>" in out) if fmt == "bioc" else out.startswith("-DOCSTART- doc1")


@pytest.mark.parametrize("argv, code, message", [
    (["extract", ""], 2, "empty text"),
    (["extract", "   \n"], 2, "empty text"),
    (["extract", "text", "--types", "Protein"], 2, "unknown entity type 'Protein'"),
    (["extract"], 2, "nothing to extract"),
    (["extract", "x", "--input", "f.txt"], 2, "not both"),
    (["extract", "--input", "/nonexistent/f.txt"], 3, "no such file"),
    (["extract", "x", "--model", "m-19990101-000000-abcdef"], 3, "unknown model version"),
    (["extract", "x", "--batch-size", "0"], 2, "--batch-size must be >= 1"),
    (["eval", "--data", "/nonexistent.tsv", "--type", "Disease"], 3, "no such file"),
    (["eval", "--dataset", "nope"], 3, "unknown dataset"),
    (["models", "promote", "m-nope"], 3, "unknown model version"),
])
def test_errors_are_one_line_with_exit_codes(vaner_home, capsys, argv, code, message):
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_eval_bad_conll_line_names_file_and_line(vaner_home, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("Breast\tB-Disease\ncancer\tX-Disease\n")
    assert main(["eval", "--data", str(bad), "--type", "Disease"]) == 2
    assert f"{bad}:2" in capsys.readouterr().err


def test_remote_uses_the_tagger_client(vaner_home, monkeypatch, capsys):
    import sys
    import types
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class RemoteEntity:
        start: int
        end: int
        text: str
        type: str
        score: float
        concepts: tuple = ()

    calls = {}

    class FakeClient:
        def __init__(self, address, options=None):
            calls["address"], calls["token_file"] = address, options.token_file

        def extract(self, documents, categories=None, timeout=None, **link):
            calls["docs"], calls["cats"], calls["link"] = documents, categories, link
            concepts = (types.SimpleNamespace(to_json=lambda: {"cui": "C0015967"}),) if link["link"] else ()
            return [types.SimpleNamespace(id="doc1", entities=(RemoteEntity(0, 5, "Fever", "Disease", 0.8, concepts),))]

        def close(self):
            calls["closed"] = True

    monkeypatch.setitem(sys.modules, "clients.tagger", types.SimpleNamespace(TaggerClient=FakeClient))
    assert main(["extract", "Fever and cough.", "--remote", "host:50051", "--types", "Disease",
                 "--token-file", "/run/token"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["entities"] == [{"start": 0, "end": 5, "text": "Fever", "type": "Disease", "score": 0.8}]
    assert calls["address"] == "host:50051" and calls["token_file"] == "/run/token"
    assert calls["docs"] == [("doc1", "Fever and cough.")]
    assert [c.value for c in calls["cats"]] == ["Disease"] and calls["closed"]
    assert calls["link"] == {"link": False, "link_k": 0, "kb_snapshot": ""}
    assert main(["extract", "x", "--remote", "host:1", "--link", "--link-k", "3", "--kb-snapshot", "kb-1"]) == 0
    assert calls["link"] == {"link": True, "link_k": 3, "kb_snapshot": "kb-1"}  # the service links
    assert json.loads(capsys.readouterr().out)[0]["entities"][0]["concepts"] == [{"cui": "C0015967"}]
    assert main(["extract", "x", "--remote", "host:1", "--link", "--link-k", "0"]) == 2
    assert "--link-k must be >= 1" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "clients.tagger", None)  # import fails
    assert main(["extract", "x", "--remote", "host:1"]) == 4
    assert "tagger client" in capsys.readouterr().err


def test_eval_on_a_conll_file(tiny_model, tmp_path, capsys):
    data = tmp_path / "d.tsv"
    data.write_text(NCBI_SAMPLE)
    assert main(["eval", "--data", str(data), "--model", str(tiny_model), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"precision", "recall", "f1", "support"} and out["support"] == 1
    assert all(0 <= out[k] <= 100 for k in ("precision", "recall", "f1"))


def test_eval_registered_model_stores_test_metrics(registered, tmp_path, capsys):
    reg, rec = registered
    (tmp_path / "data" / "ncbi").mkdir(parents=True)
    (tmp_path / "data" / "ncbi" / "test.tsv").write_text(NCBI_SAMPLE)
    assert main(["eval", "--dataset", "ncbi", "--data-dir", str(tmp_path / "data"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == rec.id and out["stored"] is True
    assert reg.resolve(rec.id).metrics["test"]["ncbi"]["f1"] == out["f1"]
    assert reg.resolve(rec.id).metrics["dev"] == {"f1": 1.0}
    # a partial evaluation is not recorded as the test score
    assert main(["eval", "--dataset", "ncbi", "--data-dir", str(tmp_path / "data"), "--max-sentences", "1",
                 "--json"]) == 0
    assert "stored" not in json.loads(capsys.readouterr().out)


def test_models_list_and_promote(registered, tiny_model, capsys):
    reg, rec = registered
    rec2 = reg.register(tiny_model, backbone="tiny", datasets=[], template={}, hyperparameters={}, metrics={},
                        command="test")
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["id"] for m in listed] == [rec2.id, rec.id] and listed[1]["latest"] is True
    assert main(["models", "promote", rec2.id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["latest"] is True
    assert main(["models"]) == 0
    assert capsys.readouterr().out.startswith(f"* {rec2.id}")
    assert main(["extract", "Fever.", "--model", "latest"]) == 0  # resolves through the registry
    assert json.loads(capsys.readouterr().out)[0]["id"] == "doc1"


def test_extract_link_wires_the_kb_linker(tiny_model, vaner_home, monkeypatch, capsys):
    import types

    seen = {}

    class FakeKB:
        def __init__(self, settings):
            pass

        def get_snapshot(self, ref):
            seen["snapshot_ref"] = ref
            return types.SimpleNamespace(id="s-42")

    def fake_link_spans(kb, texts, k=5, snapshot="latest", categories=None, should_stop=None):
        seen.update(k=k, snapshot=snapshot, n=len(texts), cats=categories)
        return [[{"cui": "C0006142", "name": t, "score": 0.9}] for t in texts]

    import kb_ingest.kb
    import retrieval.linking
    from retrieval.cli import kb_linker

    monkeypatch.setattr(kb_ingest.kb, "KnowledgeBase", FakeKB)
    monkeypatch.setattr(retrieval.linking, "link_spans", fake_link_spans)
    text = "Breast cancer and fever in BRCA1 carriers treated with aspirin."
    argv = ["extract", text, "--model", str(tiny_model), "--link", "--link-k", "3", "--overlap", "all"]
    assert main(argv) == 4  # built without a linker (the tagger package alone): a clear refusal
    assert "--link needs the knowledge base" in capsys.readouterr().err
    assert main(argv, linker=kb_linker) == 0
    out = json.loads(capsys.readouterr().out)[0]
    assert seen["snapshot_ref"] == "latest"
    if out["entities"]:
        assert seen["k"] == 3 and seen["snapshot"] == "s-42" and seen["n"] == len(out["entities"])
        assert all(e["concepts"][0]["cui"] == "C0006142" for e in out["entities"])
    assert main(["extract", "x", "--model", str(tiny_model), "--link", "--link-k", "0"], linker=kb_linker) == 2
