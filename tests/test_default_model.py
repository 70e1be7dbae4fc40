"""The bundled default model answers like a biomedical NER model: a smoke test of the shipped
weights (no other test loads them), a few sentences with unambiguous entities of each type."""

from pathlib import Path

import pytest

from tagger.extract import Extractor, load_for_inference
from tagger.formats import Document

DEFAULT = Path(__file__).resolve().parent.parent / "models" / "default"

pytestmark = pytest.mark.integration

CASES = [
    ("BRCA1 mutations greatly increase the risk of breast cancer.", {("BRCA1", "Gene"), ("breast cancer", "Disease")}),
    ("Patients received cisplatin and developed nephrotoxicity.", {("cisplatin", "Chemical"),
                                                                   ("nephrotoxicity", "Disease")}),
    ("Escherichia coli was isolated from the urine of the patients.", {("Escherichia coli", "Species")}),
]


@pytest.fixture(scope="module")
def extractor():
    return Extractor(load_for_inference(DEFAULT, device="cpu"))


def test_default_model_finds_each_type(extractor):
    docs = [Document(id=f"d{i}", text=text) for i, (text, _) in enumerate(CASES)]
    found = extractor.extract(docs)
    for doc, (_, expected) in zip(found, CASES, strict=True):
        got = {(e.text, e.type) for e in doc.entities}
        assert expected <= got, f"{doc.text!r}: expected {expected}, got {got}"


def test_default_model_is_quiet_on_plain_text(extractor):
    [doc] = extractor.extract([Document(id="plain", text="The meeting was moved to Tuesday afternoon.")])
    assert not doc.entities


def test_document_rules_give_every_short_form_its_long_forms_type(extractor):
    """The case the error analysis found (BENCHMARKS.md): a disease abbreviation that is also a gene
    symbol. Without the rules the model calls the defining "(APC)" a species."""
    text = ("Germline mutations of the adenomatous polyposis coli (APC) gene cause familial adenomatous polyposis. "
            "Desmoid tumours are frequent in APC. We studied 40 families with APC and found no new mutation.")
    [doc] = extractor.extract([Document(id="apc", text=text)])
    assert [(e.start, e.type) for e in doc.entities if e.text == "APC"] == [
        (54, "Disease"), (134, "Disease"), (167, "Disease")]
