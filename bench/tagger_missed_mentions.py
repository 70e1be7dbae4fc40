"""Which gold mentions one model misses and another finds: the error analysis behind a per-set F1 gap.

    OMP_NUM_THREADS=1 .venv/bin/python bench/tagger_missed_mentions.py --dataset linnaeus --split test \\
        --models v2=models/default,multi-v4=runs/multi-v4/best --out bench/results/missed_linnaeus.json

Only sentences with at least one gold mention are tagged (false negatives live there; false positives
elsewhere are left to the eval suite), with the dataset instruction and BIO-constrained Viterbi, as
``bench/tagger_eval_suite.py`` scores them. Reports, per model, the mention strings (lower-cased) most
often missed, and the strings the second model misses where the first finds them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagger.decoding import decode_tags  # noqa: E402
from tagger.extract import merge_for_inference  # noqa: E402
from tagger.model import VanerTagger, WordQuery  # noqa: E402
from vaner.corpus import load_dataset, tags_to_spans  # noqa: E402


def missed(model_dir: str, sents: list, dataset: str, batch_size: int) -> list[set[tuple[int, int]]]:
    model = merge_for_inference(VanerTagger.load(model_dir, device="cpu"))
    probs = model.predict_proba([WordQuery(s.words, s.category, dataset) for s in sents], batch_size)
    out = []
    for s, p in zip(sents, probs, strict=True):
        found = set(tags_to_spans(decode_tags(p, "viterbi")))
        out.append({span for span in s.spans() if span not in found})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--split", default="test", choices=("dev", "test"))
    ap.add_argument("--models", required=True, help="NAME=FOLDER,NAME=FOLDER (the first is the reference)")
    ap.add_argument("--data-dir", default=None, help="folder of the shared datasets (default ../shared/data/bioner)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = [tuple(m.split("=", 1)) for m in args.models.split(",")]
    sents = [s for s in load_dataset(args.dataset, args.split, args.data_dir) if s.spans()]

    def strings(per_sentence: list[set]) -> Counter:
        return Counter(" ".join(s.words[a:b]).lower() for s, spans in zip(sents, per_sentence, strict=True)
                       for a, b in spans)

    mention_count = strings([set(s.spans()) for s in sents])
    misses = {}
    for name, folder in models:
        t0 = time.perf_counter()
        misses[name] = missed(folder, sents, args.dataset, args.batch_size)
        print(f"{name}: {sum(map(len, misses[name]))} of {sum(mention_count.values())} gold mentions missed "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    ref = models[0][0]
    report = {"dataset": args.dataset, "split": args.split, "sentences_with_mentions": len(sents),
              "gold_mentions": sum(mention_count.values()), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": " ".join(sys.argv), "models": {}}
    for name, _ in models:
        c = strings(misses[name])
        entry = {"missed": sum(c.values()),
                 "most_missed": [(t, n, mention_count[t]) for t, n in c.most_common(args.top)]}
        if name != ref:
            only = strings([m - r for m, r in zip(misses[name], misses[ref], strict=True)])
            also = strings([r - m for m, r in zip(misses[name], misses[ref], strict=True)])
            entry[f"missed_where_{ref}_finds"] = [(t, n, mention_count[t]) for t, n in only.most_common(args.top)]
            entry[f"found_where_{ref}_misses"] = [(t, n, mention_count[t]) for t, n in also.most_common(args.top)]
        report["models"][name] = entry
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
