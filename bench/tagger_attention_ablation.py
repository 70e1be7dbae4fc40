"""Ablation at equal budget: bidirectional (VANER) vs causal attention, same data, steps, seed.

    .venv/bin/python bench/tagger_attention_ablation.py --dataset ncbi --steps 300 --out bench/results/attention

Each arm trains from the same pretrained backbone for ``--steps`` optimizer steps and is scored on
the full test split; results go to ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagger.config import TaggerConfig, TrainConfig  # noqa: E402
from tagger.data import load_dataset  # noqa: E402
from tagger.model import VanerTagger  # noqa: E402
from tagger.train import evaluate_sentences, train  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="ncbi")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--num-layers", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--arms", default="bidirectional,causal")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = {}
    test = load_dataset(args.dataset, "test")
    for arm in args.arms.split(","):
        cfg = TrainConfig(datasets=(args.dataset,), output_dir=str(out.parent / f"run-{arm}"),
                          model=TaggerConfig(num_layers=args.num_layers, attention=arm, lora_dropout=0.0),
                          epochs=1, steps_per_epoch=args.steps, batch_size=8, lr=3e-4, head_lr=1e-3,
                          dev_max_sentences=150, checkpoint_every=0, seed=13, threads=args.threads, device="cpu")
        t0 = time.perf_counter()
        res = train(cfg, resume=False)
        train_s = time.perf_counter() - t0
        model = VanerTagger.load(res.artifact_dir, device="cpu")
        m = evaluate_sentences(model, test)
        results[arm] = {"test": m, "dev_f1": res.dev_metrics.get("f1"), "train_seconds": round(train_s, 1),
                        "tokens_per_second": round(res.tokens_per_second, 1), "steps": res.steps}
        print(arm, json.dumps(results[arm]), file=sys.stderr, flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"dataset": args.dataset, "steps": args.steps, "batch_size": 8, "num_layers": args.num_layers,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv),
              "results": results}
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
