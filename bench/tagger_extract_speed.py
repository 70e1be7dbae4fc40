"""Extraction throughput of the tagger in-process, as a fraction of this CPU's fp32 FLOP roofline,
and an int8 (dynamic quantisation) path with its speed-up and F1 change.

What is measured, and why this way:
- peak: best-of-N large fp32 matmul (``torch.mm``) on the same thread count: the roofline.
- fp32 (LoRA unmerged, as ``VanerTagger.load`` returns it), fp32 merged (LoRA folded into the
  base weights, the fast serving path), int8 (merged, then ``torch.ao`` dynamic quantisation of
  every ``nn.Linear``): each runs the full :class:`tagger.extract.Extractor` path on the same fixed
  sample (the first N test sentences of a dataset, re-joined as one document each, the dataset's
  type, or ``--types all``: every type, which a multi-type model answers in one pass per sentence
  and a single-type one in four).
- model FLOPs per input of L tokens: 2 x (linear weights of the backbone) x L + 4 x layers x
  hidden x L^2 (QK^T and AV) + the O/B/I head; embeddings are lookups and cost nothing.
- F1: strict entity F1 of fp32-merged vs int8 on the first M dev sentences (the same labels),
  meaningful only for a trained model (``--model``); with an untrained head the tag agreement
  between the two paths is reported instead.

Usage (a training run may be competing for the 2 cores: say so next to the figures):
    nice -n 10 .venv/bin/python bench/tagger_extract_speed.py [--model latest|PATH] [--dataset ncbi]
        [--sentences 200] [--dev-sentences 200] [--threads 2] [--types all] [--multi-type] [--json]
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

import torch  # noqa: E402

from tagger.data import load_dataset  # noqa: E402
from tagger.evaluate import evaluate  # noqa: E402
from tagger.extract import Extractor  # noqa: E402
from tagger.formats import Document  # noqa: E402
from vaner.categories import Category  # noqa: E402


def peak_gflops(n: int = 2048, repeats: int = 8) -> tuple[float, float]:
    """(GFLOP/s per wall second, GFLOP/s per CPU second of this process), best of ``repeats``.

    CPU-time rates stay meaningful when other jobs time-slice the same cores; wall-time ones do not.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        torch.mm(a, b)
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return 2 * n**3 / best_wall / 1e9, 2 * n**3 / best_cpu / 1e9


def linear_params(module: torch.nn.Module) -> int:
    """Weights that are multiplied per token (every Linear, incl. quantised or LoRA ones)."""
    total = 0
    for m in module.modules():
        w = getattr(m, "weight", None)
        if isinstance(m, torch.nn.Embedding):
            continue
        if isinstance(m, torch.nn.Linear) and w is not None:
            total += w.numel()
        elif type(m).__name__ == "Linear" and hasattr(m, "in_features") and "quantized" in type(m).__module__:
            total += m.in_features * m.out_features
    return total


def load_tagger(ref: str | None, backbone: str = "smollm2-135m", multi_type: bool = False):
    from tagger.model import VanerTagger

    if ref is None:
        from tagger.config import TaggerConfig

        tagger = VanerTagger.create(TaggerConfig(backbone=backbone, multi_type=multi_type), device="cpu", seed=0)
        return tagger, f"untrained ({backbone}, fresh LoRA + {'multi-type ' if multi_type else ''}head)"
    path = Path(ref)
    if not path.is_dir():
        from tagger.registry import ModelRegistry
        from vaner.settings import Settings

        rec = ModelRegistry(Settings.from_env()).resolve(ref)
        path, ref = rec.artifact_path, rec.id
    return VanerTagger.load(path, device="cpu"), str(ref)


def merge_lora(tagger) -> None:
    if hasattr(tagger.backbone, "merge_and_unload"):
        tagger.backbone = tagger.backbone.merge_and_unload()


def quantize_int8(tagger, scheme: str = "per_tensor") -> None:
    """Dynamic int8: weights quantised once, activations per batch. ``per_channel`` keeps one
    weight scale per output row, which LLaMA's outlier channels need more than the speed."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if scheme == "per_channel" else default_dynamic_qconfig
    tagger.backbone = quantize_dynamic(tagger.backbone, {torch.nn.Linear: qconfig}, dtype=torch.qint8)


def measure(tagger, docs, categories, batch_size: int, repeats: int) -> dict:
    ex = Extractor(tagger, batch_size=batch_size)
    ex.extract(docs[: min(8, len(docs))], categories)  # warm-up (allocator, caches)
    best = best_cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        ex.extract(docs, categories)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return {"seconds": best, "cpu_seconds": best_cpu, "stats": ex.last_stats}


def model_tokens(tagger, docs, categories) -> list[int]:
    """Tokens of every model window the extraction runs: one set per query for a single-type
    model, one per sentence for a multi-type one (the model's own grouping)."""
    queries = Extractor(tagger).plan(docs, categories).queries
    return [len(enc.input_ids) for g in tagger.window_groups(queries) for enc in tagger.query_windows(queries[g[0]])]


def flops(tagger, lengths: list[int], linear: int) -> float:
    cfg = tagger.backbone.config
    attn = sum(4 * cfg.num_hidden_layers * cfg.hidden_size * n * n for n in lengths)
    return float(2 * linear * sum(lengths) + attn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="registry ref or model folder (default: untrained backbone)")
    ap.add_argument("--backbone", default="smollm2-135m", help="backbone when --model is not given")
    ap.add_argument("--multi-type", action="store_true", help="without --model: a fresh multi-type model "
                    "(speed does not depend on the weights)")
    ap.add_argument("--types", default=None, help="types asked per sentence: comma-separated or 'all' "
                    "(default: the dataset's type)")
    ap.add_argument("--dataset", default="ncbi")
    ap.add_argument("--sentences", type=int, default=200)
    ap.add_argument("--dev-sentences", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-int8", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="also measure the merged model with bf16 weights "
                    "(avx512_bf16 kernels through oneDNN) and its dev F1 change")
    ap.add_argument("--skip-unmerged", action="store_true", help="skip the LoRA-unmerged fp32 variant")
    ap.add_argument("--int8-scheme", default="per_tensor", choices=("per_tensor", "per_channel"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.multi_type and args.model:
        ap.error("--multi-type builds a fresh model; a saved model (--model) is whatever kind it was trained as")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    test = load_dataset(args.dataset, "test")[: args.sentences]
    dev = load_dataset(args.dataset, "dev")[: args.dev_sentences]
    categories = [test[0].category] if not args.types else Category.parse_list(
        None if args.types.strip().lower() == "all" else args.types)
    docs = [Document(f"s{i}", " ".join(s.words)) for i, s in enumerate(test)]
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.processor()
                 or platform.machine(), "cpu_count": os.cpu_count(), "threads": args.threads,
                 "torch": torch.__version__, "dataset": args.dataset, "sentences": len(docs),
                 "command": "nice -n 10 .venv/bin/python " + " ".join(sys.argv)}
    try:
        out["cpu_model"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out["loadavg_start"] = [round(x, 1) for x in os.getloadavg()]
    peak_wall, peak_cpu = peak_gflops()
    out["peak_gflops"] = round(peak_wall, 1)
    out["peak_gflops_per_cpu_s"] = round(peak_cpu, 1)

    t0 = time.perf_counter()
    tagger, name = load_tagger(args.model, args.backbone, args.multi_type)
    out["model"] = name
    out["multi_type"] = tagger.config.multi_type
    out["types"] = [c.value for c in categories]
    out["load_seconds"] = round(time.perf_counter() - t0, 1)
    lengths = model_tokens(tagger, docs, categories)
    out["model_windows"] = len(lengths)
    out["model_tokens"] = sum(lengths)
    out["words"] = sum(len(s.words) for s in test)
    results = {}

    def record(label: str, linear: int) -> None:
        peak_now, peak_cpu_now = peak_gflops(repeats=5)  # re-measured beside each variant: the CPU is shared
        m = measure(tagger, docs, categories, args.batch_size, args.repeats)
        f = flops(tagger, lengths, linear)
        peak = max(peak_now, out["peak_gflops"])
        peak_cpu = max(peak_cpu_now, out["peak_gflops_per_cpu_s"])
        results[label] = {"seconds": round(m["seconds"], 2), "cpu_seconds": round(m["cpu_seconds"], 2),
                          "sentences_per_s": round(len(docs) / m["seconds"], 2),
                          "tokens_per_s": round(sum(lengths) / m["seconds"], 1),
                          "words_per_s": round(out["words"] / m["seconds"], 1),
                          "tokens_per_cpu_s": round(sum(lengths) / m["cpu_seconds"], 1),
                          "gflops": round(f / m["seconds"] / 1e9, 2),
                          "gflops_per_cpu_s": round(f / m["cpu_seconds"] / 1e9, 2),
                          "peak_gflops_beside": round(peak_now, 1),
                          "roofline_fraction_wall": round(f / m["seconds"] / 1e9 / peak, 3),
                          "roofline_fraction_cpu": round(f / m["cpu_seconds"] / 1e9 / peak_cpu, 3),
                          "linear_params": linear}
        print(f"{label}: {results[label]}", file=sys.stderr)

    if not args.skip_unmerged:
        record("fp32_lora_unmerged", linear_params(tagger.backbone))
    merge_lora(tagger)
    linear = linear_params(tagger.backbone)
    record("fp32_merged", linear)
    f1_fp32 = evaluate(tagger, dev, batch_size=args.batch_size)
    tags_fp32 = tagger.predict_tags([_q(s) for s in dev], args.batch_size)
    if args.bf16:
        import copy

        fp32_tagger = tagger
        tagger = copy.deepcopy(fp32_tagger).to(torch.bfloat16)
        record("bf16_merged", linear)
        f1_bf16 = evaluate(tagger, dev, batch_size=args.batch_size)
        tags_bf16 = tagger.predict_tags([_q(s) for s in dev], args.batch_size)
        agree = sum(a == b for x, y in zip(tags_fp32, tags_bf16, strict=True) for a, b in zip(x, y, strict=True))
        out["bf16"] = {"speedup_vs_fp32_merged": round(results["fp32_merged"]["seconds"]
                                                       / results["bf16_merged"]["seconds"], 2),
                       "dev_f1_fp32": f1_fp32["f1"], "dev_f1_bf16": f1_bf16["f1"],
                       "f1_delta": round(f1_bf16["f1"] - f1_fp32["f1"], 2),
                       "tag_agreement": round(agree / max(sum(len(x) for x in tags_fp32), 1), 4),
                       "dev_sentences": len(dev)}
        tagger = fp32_tagger
    if not args.skip_int8:
        quantize_int8(tagger, args.int8_scheme)
        out["int8_scheme"] = args.int8_scheme
        record("int8_dynamic", linear)  # same arithmetic, int8 kernels: roofline still vs fp32 peak
        f1_int8 = evaluate(tagger, dev, batch_size=args.batch_size)
        tags_int8 = tagger.predict_tags([_q(s) for s in dev], args.batch_size)
        agree = sum(a == b for x, y in zip(tags_fp32, tags_int8, strict=True) for a, b in zip(x, y, strict=True))
        total = sum(len(x) for x in tags_fp32)
        out["int8"] = {"speedup_vs_fp32_merged": round(results["fp32_merged"]["seconds"]
                                                       / results["int8_dynamic"]["seconds"], 2),
                       "cpu_speedup_vs_fp32_merged": round(results["fp32_merged"]["cpu_seconds"]
                                                           / results["int8_dynamic"]["cpu_seconds"], 2),
                       "dev_f1_fp32": f1_fp32["f1"], "dev_f1_int8": f1_int8["f1"],
                       "f1_delta": round(f1_int8["f1"] - f1_fp32["f1"], 2),
                       "tag_agreement": round(agree / max(total, 1), 4), "dev_sentences": len(dev)}
    out["results"] = results
    out["loadavg_end"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(out, indent=2 if not args.json else None))


def _q(s):
    from tagger.model import WordQuery

    return WordQuery(s.words, s.category, s.dataset)


if __name__ == "__main__":
    main()
