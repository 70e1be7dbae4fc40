"""Document-level consistency rules (tagger/consistency.py) scored on saved predictions, no model run.

    .venv/bin/python bench/doc_consistency.py --names default-v2-dev,multi-v5 --split dev \\
        --windows 1,10,30 --out bench/results/doc_consistency_dev.json

Reads the Viterbi spans ``bench/tagger_eval_suite.py`` saved beside each eval file
(``bench/results/eval/<name>/<dataset>.<split>.<instruction>.spans.json.gz``), applies each rule set
and scores strict entity P/R/F1 against the gold tags, per dataset.

Why windows: the benchmark files keep sentences in document order but carry no document
markers, so a "document" here is ``W`` consecutive sentences (NCBI and BC5CDR abstracts hold about
10; LINNAEUS and S800 are longer). A window that straddles two documents can only spread a name into
a neighbouring document, which costs precision, so the figures are, if anything, a lower bound on
what real documents get. BC2GM sentences come from unrelated abstracts: there only W=1 is meaningful.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagger.consistency import CHOICES, Consistency, WordSpan, make_consistent  # noqa: E402
from tagger.data import DATASETS  # noqa: E402
from tagger.metrics import entity_prf  # noqa: E402
from vaner.corpus import load_dataset  # noqa: E402

EVAL = Path(__file__).resolve().parent / "results" / "eval"


def spans_to_tags(n: int, spans: list[WordSpan]) -> list[str]:
    tags = ["O"] * n
    for s in spans:
        tags[s.start] = "B"
        for k in range(s.start + 1, s.end):
            tags[k] = "I"
    return tags


def score(sents: list, predicted: list[list[list]], window: int, rules: Consistency) -> dict:
    """Strict P/R/F1 after the rules, and ``ms_per_1k_sentences`` spent in them (their cost in
    extraction, where the model takes about a minute per thousand sentences on one core)."""
    pred_tags: list[list[str]] = []
    spent = 0.0
    for w0 in range(0, len(sents), window):
        doc = sents[w0: w0 + window]
        spans = [WordSpan(i, a, b, doc[i].category.value, sc)
                 for i, rows in enumerate(predicted[w0: w0 + window]) for a, b, sc in rows]
        t0 = time.perf_counter()
        out = make_consistent([s.words for s in doc], spans, rules)
        spent += time.perf_counter() - t0
        for i, s in enumerate(doc):
            pred_tags.append(spans_to_tags(len(s.words), [x for x in out if x.sentence == i]))
    result = dict(entity_prf([list(s.tags) for s in sents], pred_tags))
    result["ms_per_1k_sentences"] = round(1e6 * spent / max(len(sents), 1), 2)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--names", required=True, help="eval folder names under bench/results/eval/")
    ap.add_argument("--split", default="dev", choices=("dev", "test"))
    ap.add_argument("--instruction", default="dataset", choices=("dataset", "free"))
    ap.add_argument("--datasets", default=",".join(DATASETS.names("bioner")))
    ap.add_argument("--windows", default="1,10,30", help="sentences per pseudo-document")
    ap.add_argument("--variants", default="none,abbreviations,repeats,both", help=f"some of {', '.join(CHOICES)}")
    ap.add_argument("--min-scores", default="0", help="min_score values tried")
    ap.add_argument("--min-shares", default="0", help="repeat_min_share values tried (repeats rule)")
    ap.add_argument("--eval-dir", default=str(EVAL), help="folder of eval results (default bench/results/eval)")
    ap.add_argument("--data-dir", default=None, help="folder of the shared datasets (default ../shared/data/bioner)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    windows = [int(w) for w in args.windows.split(",")]
    settings = []
    for v in [v.strip() for v in args.variants.split(",")]:
        base = Consistency.named(v)
        if not base.enabled:
            settings.append((v, base))
            continue
        for ms in [float(x) for x in args.min_scores.split(",")]:
            for sh in [float(x) for x in args.min_shares.split(",")]:
                label = v if ms == 0 and sh == 0 else f"{v} score>={ms:g} share>={sh:g}"
                if sh and not base.repeats:
                    continue
                settings.append((label, Consistency(base.abbreviations, base.repeats, ms, sh)))
    rows = []
    for name in [n.strip() for n in args.names.split(",") if n.strip()]:
        for ds in [d.strip() for d in args.datasets.split(",") if d.strip()]:
            path = Path(args.eval_dir) / name / f"{ds}.{args.split}.{args.instruction}.spans.json.gz"
            if not path.exists():
                print(f"{path}: missing, skipped", file=sys.stderr)
                continue
            with gzip.open(path, "rt") as fh:
                predicted = json.load(fh)["spans"]
            sents = load_dataset(ds, args.split, args.data_dir)
            if len(sents) != len(predicted):
                print(f"{path}: {len(predicted)} sentences, dataset has {len(sents)} (a sample?): skipped",
                      file=sys.stderr)
                continue
            for window in windows:
                for v, rules in settings:
                    r = score(sents, predicted, window, rules)
                    rows.append({"name": name, "dataset": ds, "split": args.split, "window": window, "rules": v,
                                 **{k: r[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn",
                                                      "ms_per_1k_sentences")}})
                    print(f"{name:16s} {ds:15s} W={window:<3d} {v:30s} P {r['precision']:6.2f} "
                          f"R {r['recall']:6.2f} F1 {r['f1']:6.2f}", file=sys.stderr)
    out = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "load": [round(x, 2) for x in os.getloadavg()], "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
