"""bench/dbr_knowledge_reach.py: test mentions split by what the corpus and the KB know, and what a DBR set carries."""

from __future__ import annotations

import json

from tests.bench_modules import load_bench
from tests.test_dbr_fakes import write_data_dir

reach = load_bench("dbr_knowledge_reach")


def test_groups_and_dbr_coverage(tmp_path, monkeypatch):
    data = write_data_dir(tmp_path / "data")
    (data / "ncbi" / "test.tsv").write_text(
        "Familial\tO\nbreast\tB-Disease\ncancer\tI-Disease\nand\tO\nWilms\tB-Disease\ntumor\tI-Disease\n"
        "and\tO\ngout\tB-Disease\n.\tO\n")
    home = tmp_path / "home"
    (home / "dbr" / "set-1").mkdir(parents=True)
    (home / "dbr" / "set-1" / "sentences.jsonl").write_text(json.dumps(
        {"words": ["Wilms", "tumor"], "tags": ["B", "I"], "pos": [["Wilms tumor", "C19"]], "neg": []}) + "\n")
    # the KB knows Wilms tumor (unseen in training) but not gout; breast cancer is tagged in training
    monkeypatch.setattr(reach, "kb_names", lambda home, snapshot, category: {"wilms tumor", "breast cancer"})
    out = tmp_path / "reach.json"
    assert reach.main(["--home", str(home), "--dataset", "ncbi", "--data-dir", str(data), "--dbr", "r=set-1",
                       "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["mentions"] == 3
    assert rep["groups"] == {"seen": 1, "unseen_in_kb": 1, "unseen_not_in_kb": 1}
    assert rep["examples_unseen_in_kb"] == ["wilms tumor"]
    assert rep["dbr"]["r"]["mentions_carried"] == {"seen": 0, "unseen_in_kb": 1, "unseen_not_in_kb": 0}
    assert reach.group_of("gout", {"gout"}, set()) == "seen"
