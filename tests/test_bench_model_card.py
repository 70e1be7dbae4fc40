"""bench/model_card.py: the card shows what users get (the document rules), read from the rules' report."""

from __future__ import annotations

import json

from tests.bench_modules import load_bench

model_card = load_bench("model_card")


def test_shipped_figures_are_the_rules_rows_of_this_model_at_ten_sentences(tmp_path):
    rows = [{"name": n, "dataset": "ncbi", "split": "test", "window": w, "rules": r, "precision": p, "recall": 80.0,
             "f1": f} for n, w, r, p, f in [("default-v2", 10, "both score>=0.5 share>=0.5", 77.49, 81.54),
                                            ("default-v2", 1, "both score>=0.5 share>=0.5", 78.0, 80.6),
                                            ("default-v2", 10, "none", 78.47, 80.39),
                                            ("multi-v6", 10, "both score>=0.5 share>=0.5", 70.0, 83.13)]]
    path = tmp_path / "doc_consistency_test.json"
    path.write_text(json.dumps({"rows": rows}))
    got = model_card._with_rules(path, "default-v2")
    assert got == {"ncbi": {"precision": 77.49, "recall": 80.0, "f1": 81.54, "rules": "both score>=0.5 share>=0.5",
                            "window": 10}}
    assert model_card._with_rules(tmp_path / "missing.json", "default-v2") == {}

    card = {"name": "m", "summary": "s"}
    figures = {"test": {"ncbi": {"ours": {"precision": 78.47, "recall": 82.4, "f1": 80.39},
                                 "ours_with_document_rules": got["ncbi"]}},
               "test_dataset_free": {}, "held_out": {}}
    text = model_card.readme(card, figures)
    assert "| ncbi | 78.47 | 82.40 | 80.39 | **81.54** |" in text and "F1 as shipped" in text
