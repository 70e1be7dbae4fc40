"""Uniform average of saved taggers of one kind (LoRA A/B and head tensors), for checkpoint averaging.

    .venv/bin/python bench/average_models.py --models models/candidates/multi-v6,models/candidates/multi-v7 \\
        --out runs/multi-v67

Why: two candidates that trade benchmark sets (one a continuation of the other) may average into one
that keeps both's strengths, as checkpoint averaging often does. LoRA A and B are averaged separately,
which is close to averaging their product only for models near each other (a continuation and its
origin), so the averaged model is judged by the same full-dev rule as any candidate.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

FILES = ("adapter/adapter_model.safetensors", "head.safetensors")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", required=True, help="comma-separated saved model folders of one config")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    models = [Path(m) for m in args.models.split(",")]
    configs = [json.loads((m / "tagger_config.json").read_text()) for m in models]
    if any(c.get("model") != configs[0].get("model") for c in configs):
        print("models differ in their model config; refusing to average", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(models[0], out)
    for name in FILES:
        tensors = [load_file(m / name) for m in models]
        avg = {k: sum(t[k].float() for t in tensors) / len(tensors) for k in tensors[0]}
        save_file({k: v.to(tensors[0][k].dtype).contiguous() for k, v in avg.items()}, str(out / name))
    (out / "averaged_from.json").write_text(json.dumps([str(m) for m in models]))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
