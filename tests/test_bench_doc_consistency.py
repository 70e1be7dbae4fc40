"""bench/doc_consistency.py scores saved spans against gold exactly as the eval suite does."""

from __future__ import annotations

import gzip
import json

from tests.bench_modules import load_bench
from tests.test_dbr_fakes import write_data_dir
from vaner.corpus import load_dataset


def test_perfect_spans_score_100_and_every_setting_gets_a_row(tmp_path):
    bench = load_bench("doc_consistency")
    data = write_data_dir(tmp_path / "data")
    sents = load_dataset("ncbi", "dev", data)
    folder = tmp_path / "eval" / "gold"
    folder.mkdir(parents=True)
    with gzip.open(folder / "ncbi.dev.dataset.spans.json.gz", "wt") as fh:
        json.dump({"decoding": "viterbi", "spans": [[[a, b, 0.9] for a, b in s.spans()] for s in sents]}, fh)
    with gzip.open(folder / "s800.dev.dataset.spans.json.gz", "wt") as fh:  # a sample: skipped, not scored
        json.dump({"decoding": "viterbi", "spans": [[]]}, fh)
    out = tmp_path / "rows.json"
    assert bench.main(["--names", "gold", "--datasets", "ncbi,s800", "--windows", "1,5", "--variants", "none,both",
                       "--min-scores", "0,0.5", "--eval-dir", str(tmp_path / "eval"), "--data-dir", str(data),
                       "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["dataset"] for r in rows} == {"ncbi"}
    assert len(rows) == 2 * (1 + 2)  # windows x (none + both at two min scores)
    assert all(r["f1"] == 100.0 for r in rows if r["rules"] == "none")
    assert all(r["recall"] == 100.0 for r in rows)  # the rules only add
