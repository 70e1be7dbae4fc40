"""Paper Table 3 at equal training budget: no DBR vs retrieved DBR vs random DBR.

Equal budget means the same optimizer steps, batch size, seed, backbone and hyperparameters for the
three runs; DBR sentences are mixed into the stream (loss summed as in paper eq. 11), so the DBR
runs see fewer dataset sentences for the same compute, which is the honest comparison on a CPU.
Model selection uses dev; test is evaluated once per run at the end and never used for choices.

    .venv/bin/python bench/dbr_ablation.py --home /tmp/vaner-dbr-bench --datasets ncbi,s800 \
        --steps 600 --epochs 3 --batch-size 8 [--backbone smollm2-135m] [--num-layers N] \
        [--modes none,retrieved,random] [--test-max 500] [--out bench/dbr_ablation.json]

Needs a KB snapshot in --home (see bench/dbr_build_speed.py --build-kb). Writes a JSON with every
run's dev/test F1 per dataset plus a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True)
    ap.add_argument("--datasets", default="ncbi,s800")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--modes", default="none,retrieved,random")
    ap.add_argument("--steps", type=int, required=True, help="total optimizer steps per run (the budget)")
    ap.add_argument("--epochs", type=int, default=3, help="dev evaluations (budget split evenly)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--num-layers", type=int, default=None)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--lora-dropout", type=float, default=0.1, help="0 is 2.4x faster on CPU")
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--dbr-seed", type=int, default=0)
    ap.add_argument("--dev-max", type=int, default=300)
    ap.add_argument("--test-max", type=int, default=None, help="cap test sentences per dataset (seeded)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from kb_ingest.kb import KnowledgeBase
    from retrieval.dbr import DbrBuilder, DbrParams
    from tagger.config import TaggerConfig, TrainConfig
    from tagger.evaluate import evaluate
    from tagger.model import VanerTagger
    from tagger.train import _sample, train
    from vaner.corpus import load_dataset
    from vaner.settings import Settings

    settings = Settings(home=Path(args.home)).ensure()
    names = [n for n in args.datasets.split(",") if n]
    kb = KnowledgeBase(settings)
    snap = kb.get_snapshot("latest")
    per_epoch = max(1, args.steps // args.epochs)
    results = {"machine": f"{platform.machine()} {os.cpu_count()} CPU cores", "date":
               time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "kb_snapshot": snap.id,
               "kb_terms": snap.terms, "encoder": snap.encoder, "budget_steps": per_epoch * args.epochs,
               "batch_size": args.batch_size, "backbone": args.backbone, "num_layers": args.num_layers,
               "command": " ".join(sys.argv), "runs": {}}
    tests = {n: _sample(load_dataset(n, "test", args.data_dir), args.test_max, args.seed) for n in names}
    for mode in [m for m in args.modes.split(",") if m]:
        extra = []
        dbr_id = None
        if mode != "none":
            s = DbrBuilder(settings, kb).build(names, DbrParams(mode=mode, seed=args.dbr_seed),
                                               snapshot=snap.id, data_dir=args.data_dir)
            extra, dbr_id = s.load(), s.id
        config = TrainConfig(
            datasets=tuple(names), data_dir=args.data_dir, output_dir=str(Path(args.home) / "ablation" / mode),
            model=TaggerConfig(backbone=args.backbone, num_layers=args.num_layers, max_length=args.max_length,
                               lora_dropout=args.lora_dropout),
            epochs=args.epochs, steps_per_epoch=per_epoch, batch_size=args.batch_size, lr=args.lr, head_lr=args.head_lr,
            dev_max_sentences=args.dev_max, seed=args.seed, threads=args.threads)
        t0 = time.perf_counter()
        result = train(config, extra_sentences=extra, resume=False)
        train_s = time.perf_counter() - t0
        model = VanerTagger.load(result.artifact_dir)
        test = {n: evaluate(model, sents) for n, sents in tests.items()}
        results["runs"][mode] = {
            "dbr_set": dbr_id, "dbr_sentences": len(extra), "train_seconds": round(train_s, 1),
            "dev_f1": result.dev_metrics.get("f1"),
            "dev": {n: m.get("f1") for n, m in result.dev_metrics.get("datasets", {}).items()},
            "test": {n: {k: m[k] for k in ("precision", "recall", "f1")} for n, m in test.items()},
            "history": result.history}
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"| run | {' | '.join(f'{n} dev F1 | {n} test P/R/F1' for n in names)} | train s |")
    print("|---|" + "---:|---:|" * len(names) + "---:|")
    for mode, r in results["runs"].items():
        cells = []
        for n in names:
            t = r["test"][n]
            cells.append(f"{r['dev'].get(n, float('nan')):.2f} | {t['precision']:.1f}/{t['recall']:.1f}/{t['f1']:.2f}")
        print(f"| {mode} DBR | {' | '.join(cells)} | {r['train_seconds']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
