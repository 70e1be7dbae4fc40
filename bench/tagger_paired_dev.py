"""Dev F1 of saved models on exactly the dev sample a training run selected its checkpoint on.

    .venv/bin/python bench/tagger_paired_dev.py --run runs/default-v2 --models runs/default-v1 \
        --out bench/results/paired_dev.json

The run's ``best/tagger_config.json`` records its TrainConfig; the sample is rebuilt with the same
seeded function the training loop used (``tagger.train.load_training_data``), so a previous model is
compared with the new one on the same sentences, both decodings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagger.config import TrainConfig  # noqa: E402
from tagger.decoding import DECODINGS, decode_tags  # noqa: E402
from tagger.extract import load_for_inference  # noqa: E402
from tagger.metrics import entity_prf  # noqa: E402
from tagger.model import WordQuery  # noqa: E402
from tagger.train import load_training_data  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="training run folder (with best/tagger_config.json)")
    ap.add_argument("--models", required=True, help="comma-separated saved model folders")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta = json.loads((Path(args.run) / "best" / "tagger_config.json").read_text())
    config = TrainConfig.from_dict(meta["train_config"])
    dev = load_training_data(config).dev
    report = {"run": args.run, "dev_sentences": {k: len(v) for k, v in dev.items()},
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_start": os.getloadavg()[0],
              "command": " ".join(sys.argv), "models": {}}
    for path in args.models.split(","):
        model = load_for_inference(path, device="cpu", threads=args.threads)
        per: dict = {d: {} for d in DECODINGS}
        for name, sents in dev.items():
            probs = model.predict_proba([WordQuery(s.words, s.category, s.dataset) for s in sents])
            gold = [list(s.tags) for s in sents]
            for d in DECODINGS:
                per[d][name] = round(entity_prf(gold, [decode_tags(p, d) for p in probs])["f1"], 2)
        report["models"][path] = {d: {"macro": round(sum(v.values()) / len(v), 2), "datasets": v}
                                  for d, v in per.items()}
        print(path, {d: report["models"][path][d]["macro"] for d in DECODINGS}, file=sys.stderr, flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
