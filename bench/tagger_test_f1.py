"""Test F1 of a trained tagger on each shared dataset, beside the paper's VANER-7B figures.

    .venv/bin/python bench/tagger_test_f1.py --model models/default --out bench/results/default_test_f1

Writes ``<out>.json`` and a bar chart ``<out>.png``. Uses the dataset-specific instruction, as the
paper's Table 1 does. ``--max-sentences`` evaluates a seeded sample (and says so in the JSON).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagger.data import DATASETS, load_dataset  # noqa: E402
from tagger.model import VanerTagger  # noqa: E402
from tagger.train import evaluate_sentences  # noqa: E402

# VANER (LLaMA-2-7B, 4-bit LoRA) test F1, paper Table 1.
PAPER_VANER = {"ncbi": 88.03, "bc5cdr-disease": 87.76, "bc2gm": 83.47, "jnlpba": 77.41, "bc5cdr-chem": 94.34,
               "linnaeus": 94.06, "s800": 77.06}


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    ours = [results[n]["f1"] for n in names]
    paper = [PAPER_VANER.get(n, 0.0) for n in names]
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar([i - 0.2 for i in x], ours, width=0.4, label="vaner (this model)")
    ax.bar([i + 0.2 for i in x], paper, width=0.4, label="VANER-7B (paper)", alpha=0.6)
    for i, v in enumerate(ours):
        ax.text(i - 0.2, v + 1, f"{v:.1f}", ha="center", fontsize=7)
    ax.set_xticks(list(x), names, rotation=20)
    ax.set_ylabel("test F1 (strict, entity level)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--datasets", default=",".join(DATASETS.names("bioner")))
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-sentences", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from tagger.extract import merge_for_inference

    model = merge_for_inference(VanerTagger.load(args.model, device="cpu"))
    results = {}
    for name in args.datasets.split(","):
        sents = load_dataset(name, args.split)
        if args.max_sentences and len(sents) > args.max_sentences:
            rng = random.Random(f"bench:{name}")
            sents = [sents[i] for i in sorted(rng.sample(range(len(sents)), args.max_sentences))]
        t0 = time.perf_counter()
        m = evaluate_sentences(model, sents, args.batch_size)
        m["sentences"] = len(sents)
        m["seconds"] = round(time.perf_counter() - t0, 1)
        m["paper_vaner_f1"] = PAPER_VANER.get(name)
        results[name] = m
        print(f"{name}: F1 {m['f1']:.2f} P {m['precision']:.2f} R {m['recall']:.2f} "
              f"({len(sents)} sentences, {m['seconds']} s)", file=sys.stderr, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"model": args.model, "split": args.split, "max_sentences": args.max_sentences,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{platform.machine()} {torch.get_num_threads()} threads, CPU only",
              "command": " ".join(sys.argv), "results": results}
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    plot(results, out.with_suffix(".png"), f"{args.model} ({args.split})")
    print(json.dumps({k: v["f1"] for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
