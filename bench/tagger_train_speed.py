"""Training throughput (tokens/s of fwd+bwd+AdamW steps) of the tagger for recipe choices.

    .venv/bin/python bench/tagger_train_speed.py --layers 16,30 --instruction paper,compact --threads 2

Real NCBI training sentences in length-bucketed batches, as the training loop builds them; the
first steps (allocator warm-up) are not timed. Prints one JSON line per configuration.
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

from tagger.config import TaggerConfig  # noqa: E402
from tagger.data import load_dataset  # noqa: E402
from tagger.instructions import InstructionTemplate  # noqa: E402
from tagger.mixing import length_bucketed_batches  # noqa: E402
from tagger.model import VanerTagger  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="16,30")
    ap.add_argument("--instruction", default="paper,compact")
    ap.add_argument("--lora-r", type=int, default=12)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--autocast", choices=("none", "bf16"), default="none",
                    help="run the forward (and so the backward) under CPU bf16 autocast")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sents = load_dataset("ncbi", "train")
    for layers in [int(x) for x in args.layers.split(",")]:
        for name in args.instruction.split(","):
            cfg = TaggerConfig(num_layers=layers, lora_dropout=0.0, lora_r=args.lora_r,
                               template=InstructionTemplate.named(name))
            model = VanerTagger.create(cfg, device="cpu", seed=13)
            model.train()
            enc = [model.encoder.encode(s.words, s.category, s.dataset, s.tags) for s in sents]
            batches = length_bucketed_batches([len(e.input_ids) for e in enc], args.batch_size, 13, 0)
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
            tokens, t_total = 0, 0.0
            for i, b in enumerate(batches[: args.steps + args.warmup]):
                batch = model.collate([enc[j] for j in b])
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.autocast == "bf16"):
                    loss = model.loss(batch)
                loss.backward()
                opt.step()
                dt = time.perf_counter() - t0
                if i >= args.warmup:
                    tokens += int(batch["attention_mask"].sum())
                    t_total += dt
            timed = batches[args.warmup: args.steps + args.warmup]
            sent_tokens = sum(len(enc[j].input_ids) for b in timed for j in b)
            print(json.dumps({"layers": layers, "instruction": name, "threads": args.threads,
                              "lora_r": args.lora_r, "autocast": args.autocast,
                              "batch_size": args.batch_size, "steps": args.steps,
                              "tokens_per_s": round(tokens / t_total, 1),
                              "sentences_per_s": round(args.steps * args.batch_size / t_total, 2),
                              "mean_tokens_per_sentence": round(sent_tokens / (args.steps * args.batch_size), 1),
                              "load": os.getloadavg()[0]}), flush=True)
            del model, opt
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
