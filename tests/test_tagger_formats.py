"""Readers and writers: PubTator and BioC round trips keep text, passages and offsets."""

from __future__ import annotations

import json

import pytest

from tagger.formats import (
    Document,
    Entity,
    Passage,
    assemble,
    parse_bioc,
    parse_pubtator,
    read_documents,
    to_bioc,
    to_conll,
    to_pubtator,
    write_documents,
)
from vaner.corpus import read_conll
from vaner.errors import InvalidArgument, NotFound

PUBTATOR = """\
10021369|t|Identification of APC2, a homologue of the adenomatous polyposis coli tumour suppressor.
10021369|a|The adenomatous polyposis coli (APC) tumour-suppressor protein controls the Wnt pathway in E. coli? No: in humans.
10021369\t18\t22\tAPC2\tGene\t10297
10021369\t43\t87\tadenomatous polyposis coli tumour suppressor\tGene\t324
10021369\t93\t119\tadenomatous polyposis coli\tDisease\tD011125
10021369\t180\t187\tE. coli\tSpecies\t562
10021369\t196\t202\thumans\tSpecies\t9606

999|t|Naïve T cells and α-synuclein.
999|a|
999\t18\t29\tα-synuclein\tGene\t
"""


def test_pubtator_reader_offsets_and_passages():
    docs = parse_pubtator(PUBTATOR)
    assert [d.id for d in docs] == ["10021369", "999"]
    d = docs[0]
    title_len = len(d.passages[0].text)
    assert d.passages[1].offset == title_len + 1 and d.text[title_len] == " "
    for e in d.entities:
        assert d.text[e.start:e.end] == e.text
    assert d.entities[0].concepts == ({"cui": "10297"},)
    assert docs[1].entities[0].text == "α-synuclein" and docs[1].entities[0].concepts == ()


def test_pubtator_round_trip():
    docs = parse_pubtator(PUBTATOR)
    again = parse_pubtator(to_pubtator(docs))
    assert again == docs
    assert to_pubtator(again) == to_pubtator(docs)


def test_pubtator_errors_name_the_line():
    with pytest.raises(InvalidArgument, match=r"x.txt:2"):
        parse_pubtator("1|t|Title\nthis is garbage\n", "x.txt")
    with pytest.raises(InvalidArgument, match="outside"):
        parse_pubtator("1|t|Title\n1|a|Abs\n2\t0\t1\tT\tGene\n")


def test_bioc_round_trip_with_passage_offsets():
    docs = parse_pubtator(PUBTATOR)
    xml = to_bioc(docs)
    again = parse_bioc(xml)
    assert [(d.id, d.text, d.passages) for d in again] == [(d.id, d.text, d.passages) for d in docs]
    for a, b in zip(again, docs, strict=True):
        assert [(e.start, e.end, e.text, e.type, e.concepts) for e in a.entities] == \
               [(e.start, e.end, e.text, e.type, e.concepts) for e in b.entities]
    assert parse_bioc(to_bioc(again)) == again


def test_bioc_gapped_passages_and_sentence_level_input():
    xml = """<?xml version="1.0"?><collection><source>x</source><document><id>D1</id>
    <passage><infon key="type">title</infon><offset>0</offset><text>Aspirin</text></passage>
    <passage><offset>20</offset>
      <sentence><offset>20</offset><text>Fever fell.</text>
        <annotation id="a"><infon key="type">Disease</infon><location offset="20" length="5"/><text>Fever</text></annotation>
      </sentence>
      <sentence><offset>32</offset><text>Done.</text></sentence>
    </passage></document></collection>"""
    (doc,) = parse_bioc(xml)
    assert doc.text == "Aspirin" + " " * 13 + "Fever fell. Done."
    assert doc.passages[1] == Passage(20, "Fever fell. Done.", "")
    assert doc.entities[0].text == "Fever" and doc.text[20:25] == "Fever"


def test_bioc_bad_xml_is_invalid_argument():
    with pytest.raises(InvalidArgument, match="not valid XML"):
        parse_bioc("<collection><document>", "f.xml")
    with pytest.raises(InvalidArgument, match="BioC"):
        parse_bioc("<html/>")


def test_json_output_contract():
    doc = Document("d", "BRCA1 and cancer", entities=(Entity(10, 16, "cancer", "Disease", 0.91234567),))
    out = json.loads(write_documents([doc], "json"))
    assert out == [{"id": "d", "text": "BRCA1 and cancer",
                    "entities": [{"start": 10, "end": 16, "text": "cancer", "type": "Disease", "score": 0.912346}]}]
    assert "text" not in json.loads(write_documents([doc], "json", include_text=False))[0]


def test_single_passage_pubtator_keeps_offsets_and_newlines_become_spaces():
    doc = Document("d", "Line one\nline two cancer", entities=(Entity(18, 24, "cancer", "Disease", 0.5),))
    (back,) = parse_pubtator(to_pubtator([doc]))
    assert back.text.startswith("Line one line two cancer") and back.entities[0].start == 18
    assert back.text[18:24] == "cancer"


def test_conll_output_is_readable_by_read_conll(tmp_path):
    text = "Breast cancer risk. BRCA1 mutation carriers."
    doc = Document("d", text, entities=(Entity(0, 13, "Breast cancer", "Disease", 0.9),
                                        Entity(20, 25, "BRCA1", "Gene", 0.8)))
    conll = to_conll([doc])
    assert "Breast\tB-Disease\ncancer\tI-Disease\nrisk\tO" in conll and "BRCA1\tB-Gene" in conll
    path = tmp_path / "out.tsv"
    path.write_text(conll.replace("B-Gene", "O"))
    sents = read_conll(path)
    assert [list(s.tags) for s in sents][0] == ["B", "I", "O", "O"]


def test_assemble_rejects_overlapping_passages_and_fixes_mentions():
    with pytest.raises(InvalidArgument, match="overlaps"):
        assemble("x", [Passage(0, "abcdef"), Passage(3, "zz")])
    doc = assemble("x", [Passage(0, "abc def")], [Entity(4, 7, "DEF", "Gene")])
    assert doc.entities[0].text == "def"


def test_read_documents_formats_and_errors(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("Some text.", encoding="utf-8")
    assert read_documents(p, "text")[0] == Document("a", "Some text.")
    (tmp_path / "b.pubtator").write_text(PUBTATOR)
    assert len(read_documents(tmp_path / "b.pubtator", "pubtator")) == 2
    with pytest.raises(NotFound):
        read_documents(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe bad")
    with pytest.raises(InvalidArgument, match="UTF-8"):
        read_documents(tmp_path / "bad.txt")
    with pytest.raises(InvalidArgument, match="input format"):
        read_documents(p, "docx")
    with pytest.raises(InvalidArgument, match="output format"):
        write_documents([], "xlsx")
