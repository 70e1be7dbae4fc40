"""Every figure the model card needs, one JSON file per (dataset, split, instruction), resumable.

    .venv/bin/python bench/tagger_eval_suite.py --model runs/default-v2/best --name default-v2 \
        --datasets ncbi,s800 --split test --instruction dataset

Probabilities are computed once per sentence and decoded both ways (``argmax`` and BIO-constrained
``viterbi``), so the decoding is chosen on dev and the test figures of both are on the record.
``--instruction free`` asks with the dataset-free instruction (what users' own text gets), which
is also how held-out corpora are scored. Beside each JSON, ``*.spans.json.gz`` keeps every
sentence's Viterbi spans and scores, so post-processing (``bench/doc_consistency.py``) is scored
without the model. Files land in ``bench/results/eval/<name>/`` and a run that is killed resumes at
the next missing file; shard datasets across processes (one per core) with ``--datasets``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagger.data import DATASETS, load_dataset  # noqa: E402
from tagger.decoding import DECODINGS, decode_spans, decode_tags  # noqa: E402
from tagger.extract import merge_for_inference  # noqa: E402
from tagger.metrics import entity_prf  # noqa: E402
from tagger.model import VanerTagger, WordQuery  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "eval"


def write_spans(path: Path, probs: list) -> None:
    """The Viterbi spans of every sentence with their scores (mean tag probability, as the extractor
    gives), so that document-level rules (``bench/doc_consistency.py``) are scored without the model."""
    spans = [[[a, b, round(score, 4)] for a, b, score in decode_spans(p, "viterbi")] for p in probs]
    with gzip.open(path, "wt") as fh:
        json.dump({"decoding": "viterbi", "spans": spans}, fh, separators=(",", ":"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="saved model folder")
    ap.add_argument("--name", required=True, help="results folder name under bench/results/eval/")
    ap.add_argument("--datasets", default=",".join(DATASETS.names("bioner")))
    ap.add_argument("--split", default="test", choices=("train", "dev", "test"))
    ap.add_argument("--instruction", default="dataset", choices=("dataset", "free"))
    ap.add_argument("--max-sentences", type=int, default=None, help="seeded sample per dataset (default: all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out_dir = RESULTS / args.name
    out_dir.mkdir(parents=True, exist_ok=True)
    model = None
    for name in [n.strip() for n in args.datasets.split(",") if n.strip()]:
        path = out_dir / f"{name}.{args.split}.{args.instruction}.json"
        if path.exists() and path.with_suffix(".spans.json.gz").exists() and not args.force:
            print(f"{path.name}: done before, skipped", file=sys.stderr)
            continue
        if model is None:
            model = merge_for_inference(VanerTagger.load(args.model, device="cpu"))
        sents = load_dataset(name, args.split)
        if args.max_sentences and len(sents) > args.max_sentences:
            rng = random.Random(f"bench:{name}")
            sents = [sents[i] for i in sorted(rng.sample(range(len(sents)), args.max_sentences))]
        dataset = name if args.instruction == "dataset" else None
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        probs = []
        chunk = 512
        for i in range(0, len(sents), chunk):
            part = sents[i: i + chunk]
            probs.extend(model.predict_proba([WordQuery(s.words, s.category, dataset) for s in part], args.batch_size))
            done = min(i + chunk, len(sents))
            rate = done / (time.perf_counter() - t0)
            print(f"{name} {args.split} {args.instruction}: {done}/{len(sents)} sentences, {rate:.1f}/s, "
                  f"ETA {(len(sents) - done) / rate:.0f} s", file=sys.stderr, flush=True)
        seconds = time.perf_counter() - t0
        gold = [list(s.tags) for s in sents]
        report = {"model": args.model, "dataset": name, "split": args.split, "instruction": args.instruction,
                  "sentences": len(sents), "sampled": bool(args.max_sentences and len(sents) == args.max_sentences),
                  "seconds": round(seconds, 1), "sentences_per_s": round(len(sents) / seconds, 2),
                  "threads": args.threads, "load_start": round(load0, 2), "load_end": round(os.getloadavg()[0], 2),
                  "machine": f"{platform.machine()} {os.cpu_count()} cores, CPU only",
                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv),
                  "decodings": {d: entity_prf(gold, [decode_tags(p, d) for p in probs]) for d in DECODINGS}}
        path.write_text(json.dumps(report, indent=2))
        write_spans(path.with_suffix(".spans.json.gz"), probs)
        f1 = {d: round(report["decodings"][d]["f1"], 2) for d in DECODINGS}
        print(f"{name} {args.split} {args.instruction}: F1 {f1} ({len(sents)} sentences, {seconds:.0f} s)",
              file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
