"""4-type extraction of abstracts, several saved models measured in one run (issue 11's speed table).

What users run is "every entity type in these abstracts", through the path `vaner extract` and the
service share (``tagger.extract.load_for_inference``: LoRA merged, eval mode, threads; then
``Extractor.extract`` with every category). A single-type model answers each (sentence, type) in
its own pass; a multi-type model answers a sentence's four types in one. So the figure that
matters is abstracts per second for all four types, compared between models *in the same run*
(the models take turns, repeat by repeat, so drift in the machine's speed hits them alike).

Per model it reports abstracts/s, sentences/s, words/s and model tokens/s (best of ``--repeats``,
and the median), the speed-up over the first model, and, when ``--eval NAME=RESULTS`` names a
``bench/tagger_eval_suite.py`` results folder, the test F1 per benchmark set beside it (Viterbi
decoding, dataset instruction), so no speed figure stands without its accuracy. The spaCy peer's
rate (``--spacy``: its tagging speed on one thread, per dataset model) is converted to the same
unit: four per-type models, each over every sentence of an abstract.

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python bench/tagger_abstracts_speed.py \\
        --models v2=models/default,multi=runs/multi-v1/best --abstracts 40 --threads 1 \\
        --eval v2=default-v2,multi=multi-v1 --spacy bench/results/spacy_baseline.json \\
        --out bench/results/extract_abstracts_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

BENCHMARK_SETS = ("ncbi", "bc5cdr-disease", "bc5cdr-chem", "bc2gm", "jnlpba", "linnaeus", "s800")


def pairs(text: str | None) -> list[tuple[str, str]]:
    out = []
    for item in (text or "").split(","):
        if item.strip():
            name, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"expected NAME=VALUE, got {item!r}")
            out.append((name.strip(), value.strip()))
    return out


def test_f1(results_dir: Path) -> dict[str, float]:
    """Viterbi test F1 per benchmark set from a tagger_eval_suite.py results folder."""
    f1 = {}
    for name in BENCHMARK_SETS:
        path = results_dir / f"{name}.test.dataset.json"
        if path.exists():
            report = json.loads(path.read_text())
            f1[name] = round(report["decodings"]["viterbi"]["f1"], 2)
    return f1


def spacy_rate(path: Path, sentences_per_abstract: float) -> dict:
    """The spaCy peer in abstracts/s for four types: one per-type model per type, each tagging
    every sentence (its recorded 1-thread rate, averaged over the dataset models measured)."""
    rows = [r for r in json.loads(path.read_text())["rows"] if r.get("speed")]
    rates = [s["sentences_per_s"] for r in rows for s in r["speed"] if s.get("threads") == 1]
    if not rates:
        return {}
    per_model = statistics.mean(rates)
    return {"sentences_per_s_one_type": round(per_model, 1), "datasets": [r["dataset"] for r in rows],
            "abstracts_per_s_four_types": round(per_model / 4 / sentences_per_abstract, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", required=True, help="NAME=MODEL_FOLDER,...; the first is the baseline")
    ap.add_argument("--abstracts", type=int, default=40)
    ap.add_argument("--sentences-per-doc", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval", default=None, help="NAME=EVAL_RESULTS_NAME,... (bench/results/eval/<name>)")
    ap.add_argument("--spacy", default=None, help="bench/spacy_baseline.py results JSON")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch
    from services_load import abstracts
    from tagger_extract_speed import model_tokens

    from tagger.extract import Extractor, load_for_inference
    from tagger.formats import Document
    from vaner.categories import Category

    torch.set_num_threads(args.threads)
    texts = abstracts(args.abstracts, args.sentences_per_doc)
    docs = [Document(id=f"a{i}", text=t) for i, t in enumerate(texts)]
    categories = list(Category)
    words = sum(len(t.split()) for t in texts)
    models = pairs(args.models)
    extractors = {}
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv),
                 "machine": f"{platform.machine()} {os.cpu_count()} cores", "threads": args.threads,
                 "torch": torch.__version__, "abstracts": len(docs), "sentences_per_abstract": args.sentences_per_doc,
                 "words": words, "types": [c.value for c in categories], "loadavg_start": os.getloadavg()}
    try:
        out["cpu_model"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    rows: dict[str, dict] = {}
    for name, folder in models:
        tagger = load_for_inference(folder, device="cpu", threads=args.threads)
        extractors[name] = Extractor(tagger, batch_size=args.batch_size)
        lengths = model_tokens(tagger, docs, categories)
        rows[name] = {"model": folder, "multi_type": tagger.config.multi_type,
                      "instruction": tagger.config.template.with_dataset, "model_windows": len(lengths),
                      "model_tokens": sum(lengths), "seconds": []}
        extractors[name].extract(docs[:2], categories)  # warm-up: allocator, caches
    sentences = None
    for rep in range(args.repeats):
        for name, _ in models:
            t0 = time.perf_counter()
            result = extractors[name].extract(docs, categories)
            rows[name]["seconds"].append(round(time.perf_counter() - t0, 3))
            rows[name]["entities"] = sum(len(d.entities) for d in result)
            sentences = extractors[name].last_stats.sentences
            print(f"repeat {rep + 1}/{args.repeats} {name}: {rows[name]['seconds'][-1]:.1f} s", file=sys.stderr,
                  flush=True)
    n_sent = sentences or len(docs) * args.sentences_per_doc
    base = None
    evals = dict(pairs(args.eval))
    for name, _ in models:
        row = rows[name]
        best, median = min(row["seconds"]), statistics.median(row["seconds"])
        row.update({"best_seconds": best, "median_seconds": median,
                    "abstracts_per_s": round(len(docs) / best, 3), "abstracts_per_s_median": round(len(docs) / median, 3),
                    "sentences_per_s": round(n_sent / best, 2), "words_per_s": round(words / best, 1),
                    "model_tokens_per_s": round(row["model_tokens"] / best, 1)})
        base = base or row
        row["speedup"] = round(row["abstracts_per_s"] / base["abstracts_per_s"], 2)
        row["token_ratio_vs_first"] = round(base["model_tokens"] / row["model_tokens"], 2)
        if name in evals:
            row["test_f1"] = test_f1(ROOT / "bench" / "results" / "eval" / evals[name])
            if base.get("test_f1") and row is not base:
                row["test_f1_change"] = {d: round(row["test_f1"][d] - base["test_f1"][d], 2)
                                         for d in row["test_f1"] if d in base["test_f1"]}
    out["models"] = rows
    if args.spacy:
        out["spacy_peer"] = spacy_rate(Path(args.spacy), n_sent / len(docs))
    out["loadavg_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(out, indent=2))
    plot(out, Path(args.out).with_suffix(".png"))
    for name, row in rows.items():
        print(f"{name}: {row['abstracts_per_s']} abstracts/s ({row['speedup']}x), {row['model_tokens_per_s']} tokens/s, "
              f"{row['model_tokens']} model tokens", file=sys.stderr)
    return 0


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(out["models"])
    rates = [out["models"][n]["abstracts_per_s"] for n in names]
    if out.get("spacy_peer"):
        names.append("spaCy CNN\n(4 per-type models)")
        rates.append(out["spacy_peer"]["abstracts_per_s_four_types"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bars = ax.barh(names, rates, color=["#4c72b0"] * len(out["models"]) + ["#999999"] * (len(names) - len(out["models"])))
    for bar, rate in zip(bars, rates, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {rate:.2f}", va="center")
    ax.set_xlabel(f"abstracts/s, all four types, {out['threads']} thread(s)")
    ax.set_title(f"4-type extraction, {out['abstracts']} abstracts ({out.get('cpu_model', out['machine'])})", fontsize=9)
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
