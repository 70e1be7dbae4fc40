"""How many gold entity mentions the DBR phrase miner proposes as query phrases.

A mention the miner never proposes can still be reached through a neighbouring phrase, but the
retrieved entities are only as relevant as the queries, so this is the miner's recall ceiling.
Measured on TRAIN splits (the miner runs on training sentences; test is never used for tuning).

    exact  : the gold span (same word start and end) is one of the mined phrases
    head   : some mined phrase overlaps the gold span and contains its head (last alphanumeric word)
    phrases/sent: average number of query phrases (the retrieval cost)

Usage: .venv/bin/python bench/dbr_phrase_coverage.py [--datasets ncbi,s800] [--split train] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrieval.phrases import MinerConfig, PhraseMiner, _is_content, chunks  # noqa: E402
from vaner.corpus import DATASETS, load_dataset  # noqa: E402

_ALNUM = re.compile(r"[A-Za-z0-9]")


def head_index(words, s: int, e: int) -> int:
    for i in range(e - 1, s - 1, -1):
        if _ALNUM.search(words[i]):
            return i
    return e - 1


def baseline_spans(words, variant: str) -> set[tuple[int, int]]:
    """Reference points: ``chunks`` = maximal boundary chunks only (a POS-free NP chunker);
    ``ngrams`` = every n-gram (n<=6) with content words at both ends (recall ceiling, high cost)."""
    if variant == "chunks":
        return set(chunks(words))
    out = set()
    for i in range(len(words)):
        if _is_content(words[i]):
            for j in range(i + 1, min(len(words), i + 6) + 1):
                if _is_content(words[j - 1]):
                    out.add((i, j))
    return out


def coverage(sentences, miner: PhraseMiner | None, variant: str = "miner") -> dict:
    gold = exact = head = n_phr = 0
    for sent in sentences:
        if variant == "miner":
            spans = {(p.start, p.end) for p in miner.mine(sent.words)}
        else:
            spans = baseline_spans(sent.words, variant)
        n_phr += len(spans)
        for s, e in sent.spans():
            gold += 1
            if (s, e) in spans:
                exact += 1
            h = head_index(sent.words, s, e)
            if any(ps <= h < pe and ps < e and s < pe for ps, pe in spans):
                head += 1
    return {"mentions": gold, "exact": exact / max(gold, 1), "head": head / max(gold, 1),
            "phrases_per_sentence": n_phr / max(len(sentences), 1), "sentences": len(sentences)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS.names("bioner")))
    ap.add_argument("--split", default="train", choices=["train", "dev"])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--max-phrases", type=int, default=MinerConfig.max_phrases)
    ap.add_argument("--baselines", action="store_true", help="also measure the chunks / all-ngrams baselines")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = MinerConfig(max_phrases=args.max_phrases)
    rows = []
    for name in [n for n in args.datasets.split(",") if n]:
        train = load_dataset(name, "train", args.data_dir)
        t0 = time.perf_counter()
        miner = PhraseMiner(cfg).fit(s.words for s in train)
        fit_s = time.perf_counter() - t0
        evald = train if args.split == "train" else load_dataset(name, args.split, args.data_dir)
        t0 = time.perf_counter()
        row = coverage(evald, miner)
        mine_s = time.perf_counter() - t0
        row.update(dataset=name, fit_seconds=round(fit_s, 2),
                   sentences_per_second=round(len(evald) / max(mine_s, 1e-9), 1))
        rows.append(row)
        if args.baselines:
            for variant in ("chunks", "ngrams"):
                b = coverage(evald, None, variant)
                b.update(dataset=f"{name} ({variant})", fit_seconds="-", sentences_per_second="-")
                rows.append(b)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print("| dataset | mentions | exact | head-overlap | phrases/sent | fit s | mine sent/s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['dataset']} | {r['mentions']} | {r['exact']:.1%} | {r['head']:.1%} | "
                  f"{r['phrases_per_sentence']:.1f} | {r['fit_seconds']} | {r['sentences_per_second']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
