"""Build the default model's card from measured files: per-dataset test P/R/F1 (full test sets),
dataset-free-instruction F1, held-out corpora, beside the previous default, the spaCy CNN
baseline and the paper; writes ``model_card.json`` (merged into the existing card), the README
and a PNG comparison.

    .venv/bin/python bench/model_card.py --model-dir models/default --eval default-v2 \
        --prev-eval default-v1 --spacy bench/results/spacy_baseline.json --decoding viterbi

Every number comes from a JSON written by ``bench/tagger_eval_suite.py`` or
``bench/spacy_baseline.py``; nothing is typed in by hand except the paper's Table 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vaner.corpus import DATASETS, load_dataset  # noqa: E402

EVAL = Path(__file__).resolve().parent / "results" / "eval"
# VANER (LLaMA-2-7B, 4-bit LoRA) test F1, paper Table 1.
PAPER_VANER = {"ncbi": 88.03, "bc5cdr-disease": 87.76, "bc2gm": 83.47, "jnlpba": 77.41, "bc5cdr-chem": 94.34,
               "linnaeus": 94.06, "s800": 77.06}


def _load(name: str | None, dataset: str, split: str, instruction: str, decoding: str) -> dict | None:
    if not name:
        return None
    path = EVAL / name / f"{dataset}.{split}.{instruction}.json"
    if not path.exists():
        return None
    rep = json.loads(path.read_text())
    m = rep["decodings"][decoding]
    return {"precision": round(m["precision"], 2), "recall": round(m["recall"], 2), "f1": round(m["f1"], 2),
            "sentences": rep["sentences"], "sampled": rep["sampled"]}


@functools.cache
def _test_size(name: str) -> int:
    """Sentences in the full test set, read from the data so a re-split corpus cannot go stale here."""
    return len(load_dataset(name, "test"))


def _prev(rows: dict, name: str) -> dict | None:
    """A row of the previous default's argmax test report (a seeded sample where it says so)."""
    r = rows.get(name)
    if not r:
        return None
    return {"precision": round(r["precision"], 2), "recall": round(r["recall"], 2), "f1": round(r["f1"], 2),
            "sentences": r.get("sentences"), "sampled": r.get("sentences", 0) < _test_size(name)}


def _spacy(path: Path | None) -> dict[str, dict]:
    if not path or not path.exists():
        return {}
    rows = json.loads(path.read_text()).get("rows", [])
    return {r["dataset"]: r for r in rows}


def _with_rules(path: Path | None, name: str, window: int = 10) -> dict[str, dict]:
    """The document rules' rows (``bench/doc_consistency.py``: both rules, ``window`` sentences per document)
    of eval ``name``: what ``vaner extract`` returns by default, per dataset."""
    if not path or not path.exists():
        return {}
    report = json.loads(path.read_text())
    return {r["dataset"]: {"precision": round(r["precision"], 2), "recall": round(r["recall"], 2),
                           "f1": round(r["f1"], 2), "rules": r["rules"], "window": r["window"]}
            for r in report["rows"] if r["name"] == name and r["rules"].startswith("both") and r["window"] == window}


def table(args: argparse.Namespace) -> dict:
    spacy = _spacy(Path(args.spacy) if args.spacy else None)
    rules = _with_rules(Path(args.consistency) if args.consistency else None, args.eval)
    prev_json = Path(args.prev_json) if args.prev_json else None
    prev_rows = json.loads(prev_json.read_text())["results"] if prev_json and prev_json.exists() else {}
    out: dict = {"test": {}, "test_dataset_free": {}, "held_out": {}}
    for name in DATASETS.names("bioner"):
        row = {"ours": _load(args.eval, name, "test", "dataset", args.decoding),
               "ours_with_document_rules": rules.get(name),
               "ours_argmax": _load(args.eval, name, "test", "dataset", "argmax"),
               "previous_default": _load(args.prev_eval, name, "test", "dataset", "argmax") or _prev(prev_rows, name),
               "paper_vaner_7b_f1": PAPER_VANER.get(name)}
        sp = spacy.get(name)
        if sp:
            row["spacy_cnn"] = {k: sp["test"][k] for k in ("precision", "recall", "f1")} if "test" in sp else None
        out["test"][name] = row
        out["test_dataset_free"][name] = _load(args.eval, name, "test", "free", args.decoding)
    for name in args.held_out.split(","):
        if name:
            out["held_out"][name] = {"ours": _load(args.eval, name, "test", "free", args.decoding),
                                     "previous_default": _load(args.prev_eval, name, "test", "free", "argmax")}
    return out


def plot(figures: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(figures["test"])
    series = [("vaner default as shipped (document rules)",
               lambda r: (r.get("ours_with_document_rules") or r.get("ours") or {}).get("f1")),
              ("previous default", lambda r: (r.get("previous_default") or {}).get("f1")),
              ("spaCy CNN (same splits)", lambda r: (r.get("spacy_cnn") or {}).get("f1")),
              ("VANER-7B (paper)", lambda r: r.get("paper_vaner_7b_f1"))]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.2
    for k, (label, get) in enumerate(series):
        vals = [get(figures["test"][n]) for n in names]
        xs = [i + (k - 1.5) * width for i in range(len(names))]
        ax.bar([x for x, v in zip(xs, vals, strict=True) if v is not None], [v for v in vals if v is not None],
               width=width, label=label, alpha=0.85 if k == 0 else 0.6)
        for x, v in zip(xs, vals, strict=True):
            if v is not None:
                ax.text(x, v + 0.8, f"{v:.0f}", ha="center", fontsize=6)
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set_ylabel("test F1 (strict, entity level)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("vaner default model vs previous default, spaCy CNN baseline and the paper", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def readme(card: dict, figures: dict) -> str:
    def f(m: dict | None, key: str = "f1") -> str:
        return "n/a" if not m or m.get(key) is None else f"{m[key]:.2f}"

    lines = [f"# {card.get('name', 'vaner default model')}", "",
             card.get("summary", ""), "",
             "## Test figures (strict entity-level P/R/F1, full test sets, dataset instruction)", "",
             "**F1 as shipped** adds the document rules `vaner extract` runs by default (abbreviations and "
             "repeated names, `--consistency both`; 10-sentence windows, as the test files have no document "
             "markers); the other columns are sentence by sentence.", "",
             "| dataset | P | R | F1 | **F1 as shipped** | argmax F1 | dataset-free F1 | previous default F1 | "
             "spaCy CNN F1 | VANER-7B F1 (paper) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in figures["test"].items():
        prev = r.get("previous_default")
        prev_s = f(prev) + (" (sample)" if prev and prev.get("sampled") else "")
        free = figures["test_dataset_free"].get(name)
        free_s = f(free) + (f" ({free['sentences']}-sentence sample)" if free and free.get("sampled") else "")
        lines.append(f"| {name} | {f(r.get('ours'), 'precision')} | {f(r.get('ours'), 'recall')} | "
                     f"{f(r.get('ours'))} | **{f(r.get('ours_with_document_rules'))}** | {f(r.get('ours_argmax'))} | "
                     f"{free_s} | {prev_s} | {f(r.get('spacy_cnn'))} | "
                     f"{r.get('paper_vaner_7b_f1') or 'n/a'} |")
    if figures["held_out"]:
        lines += ["", "## Held-out corpora (never trained on; dataset-free instruction; seeded test samples)", "",
                  "| corpus | P | R | **F1** | previous default F1 |", "|---|---:|---:|---:|---:|"]
        for name, r in figures["held_out"].items():
            lines.append(f"| {name} | {f(r.get('ours'), 'precision')} | {f(r.get('ours'), 'recall')} | "
                         f"**{f(r.get('ours'))}** | {f(r.get('previous_default'))} |")
    for key, title in (("recipe", "Recipe"), ("training", "Training"), ("weaknesses", "Known weaknesses")):
        if card.get(key):
            lines += ["", f"## {title}", ""]
            val = card[key]
            lines += [f"- {x}" for x in val] if isinstance(val, list) else [str(val)]
    lines += ["", "![per-dataset comparison](test_f1_comparison.png)", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", default="models/default")
    ap.add_argument("--eval", required=True, help="bench/results/eval/<name> of this model")
    ap.add_argument("--prev-eval", default=None, help="bench/results/eval/<name> of the previous default")
    ap.add_argument("--prev-json", default="bench/results/default_test_f1.json",
                    help="the previous default's bench/tagger_test_f1.py report, used where --prev-eval has no file")
    ap.add_argument("--spacy", default="bench/results/spacy_baseline.json")
    ap.add_argument("--decoding", default="viterbi", help="chosen on dev")
    ap.add_argument("--consistency", default="bench/results/doc_consistency_test.json",
                    help="bench/doc_consistency.py test report: the figures with the document rules (as shipped)")
    ap.add_argument("--held-out", default="bionlp13cg-chem,bionlp13cg-gene,bionlp13cg-species")
    ap.add_argument("--notes", default=None, help="JSON file with summary/recipe/training/weaknesses to merge in")
    args = ap.parse_args()
    model_dir = Path(args.model_dir)
    card_path = model_dir / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    if args.notes:
        card.update(json.loads(Path(args.notes).read_text()))
    figures = table(args)
    card.setdefault("metrics", {})["test"] = figures["test"]
    card["metrics"]["test_dataset_free"] = figures["test_dataset_free"]
    card["metrics"]["held_out"] = figures["held_out"]
    card["decoding"] = args.decoding
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    plot(figures, model_dir / "test_f1_comparison.png")
    (model_dir / "README.md").write_text(readme(card, figures))
    print(json.dumps({n: [(r.get(k) or {}).get("f1") for k in ("ours", "ours_with_document_rules")]
                      for n, r in figures["test"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
