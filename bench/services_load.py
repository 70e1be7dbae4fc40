"""Load test of the Tagger service on a real loopback port, with the in-process figure beside it.

    .venv/bin/python bench/services_load.py --clients 32 --calls 200 [--json out.json]

Starts ``vaner serve tagger`` on the tiny random LLaMA (2 layers, width 32; the point is the
serving path, not the model) or, with ``--model``, on a real saved model (e.g. ``models/default``),
then ``--clients`` threads each make ``--calls`` Extract calls of
``--docs-per-call`` sentences. Reports errors, p50/p90/p99 latency and documents/s. The in-process
baseline pushes the same documents through ``tagger.extract.Extractor`` in batches of
``--batch-size`` from one thread: the best the model can do without any RPC, which the gRPC path
is compared against (goal: >= 90%). Both paths load the model with
``tagger.extract.load_for_inference`` (LoRA merged), as the service does. ``--abstracts N`` sends
abstract-sized documents instead of single sentences: N documents of ``--sentences-per-doc``
consecutive NCBI test sentences, all four entity types, which is what users send.

    .venv/bin/python bench/services_load.py --model models/default --abstracts 48 --clients 4 \
        --calls 4 --docs-per-call 3 --inproc-docs 48 --json bench/results/services_load_default.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SENTENCES = [
    "Germline mutations in BRCA1 and BRCA2 cause familial breast and ovarian cancer.",
    "Aspirin reduced the risk of colorectal adenoma in patients with Lynch syndrome.",
    "The APC gene is mutated in most sporadic colorectal tumours of adults.",
    "Mice lacking the dystrophin gene develop a mild muscular dystrophy phenotype.",
    "Cisplatin-induced nephrotoxicity was attenuated by co-treatment with amifostine.",
    "Escherichia coli strains carrying the stx2 gene caused haemolytic uraemic syndrome.",
    "Patients with type 2 diabetes received metformin and showed lower HbA1c levels.",
    "Deficiency of hexosaminidase A leads to Tay-Sachs disease in infants.",
]


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


def build_model(root: Path, model: str | None) -> tuple[Path, Path]:
    from services.testing import make_tiny_model, register_model

    if model:
        artifact = Path(model).resolve()
    else:
        from tests.conftest import make_tiny_llama

        artifact = make_tiny_model(make_tiny_llama(root / "backbone"), root / "artifact")
    home = root / "home"
    register_model(home, artifact)
    return home, artifact


def abstracts(n: int, per_doc: int) -> list[str]:
    """Abstract-sized documents: consecutive NCBI test sentences joined (the split keeps document order)."""
    from vaner.corpus import load_dataset

    sents = [" ".join(s.words) for s in load_dataset("ncbi", "test")]
    return [" ".join(sents[i * per_doc:(i + 1) * per_doc]) for i in range(min(n, len(sents) // per_doc))]


def cpu_seconds(pid: int | None = None) -> float:
    """user+system CPU time of a process (this one by default), children excluded."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def in_process(artifact: Path, docs: list[tuple[str, str]], batch_size: int, threads: int) -> dict:
    import torch

    from tagger.extract import Extractor, load_for_inference
    from tagger.formats import Document

    torch.set_num_threads(threads)
    extractor = Extractor(load_for_inference(artifact, device="cpu", threads=threads), batch_size=batch_size)
    warm = [Document(id=i, text=t) for i, t in docs[:batch_size]]
    extractor.extract(warm)
    c0, t0 = cpu_seconds(), time.perf_counter()
    n = 0
    for i in range(0, len(docs), batch_size):
        chunk = [Document(id=d, text=t) for d, t in docs[i: i + batch_size]]
        n += len(extractor.extract(chunk))
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"documents": n, "wall_s": round(wall, 3), "docs_per_s": round(n / wall, 3), "cpu_s": round(cpu, 2),
            "docs_per_cpu_s": round(n / cpu, 3)}


def over_grpc(address: str, clients: int, calls: int, docs_per_call: int, server_pid: int,
              texts: list[str]) -> dict:
    from clients import TaggerClient

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def worker(w: int) -> None:
        client = TaggerClient(address, timeout=1800)
        client.extract([texts[0]])  # connect before the clock starts
        mine, errs = [], []
        barrier.wait()
        for c in range(calls):
            batch = [(f"{w}-{c}-{k}", texts[(w * calls * docs_per_call + c * docs_per_call + k) % len(texts)])
                     for k in range(docs_per_call)]
            t = time.perf_counter()
            try:
                out = client.extract(batch)
                if len(out) != len(batch):
                    errs.append("short response")
            except Exception as exc:  # noqa: BLE001 - counted, reported
                errs.append(f"{type(exc).__name__}: {exc}")
            mine.append(time.perf_counter() - t)
        client.close()
        with lock:
            latencies.extend(mine)
            errors.extend(errs)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    c0, s0, t0 = cpu_seconds(), cpu_seconds(server_pid), time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    client_cpu, server_cpu = cpu_seconds() - c0, cpu_seconds(server_pid) - s0
    n_calls = clients * calls
    ms = [x * 1000 for x in latencies]
    return {"clients": clients, "calls": n_calls, "documents": n_calls * docs_per_call, "errors": len(errors),
            "first_errors": errors[:3], "wall_s": round(wall, 3), "calls_per_s": round(n_calls / wall, 1),
            "docs_per_s": round(n_calls * docs_per_call / wall, 3), "p50_ms": round(statistics.median(ms), 2),
            "p90_ms": round(percentile(ms, 90), 2), "p99_ms": round(percentile(ms, 99), 2),
            "max_ms": round(max(ms), 2), "server_cpu_s": round(server_cpu, 2), "client_cpu_s": round(client_cpu, 2),
            "docs_per_server_cpu_s": round(n_calls * docs_per_call / server_cpu, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--docs-per-call", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32, help="server micro-batch and in-process batch")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads, both paths (1 avoids OpenMP spin-wait collapse on a shared CPU)")
    ap.add_argument("--inproc-docs", type=int, default=1024,
                    help="documents for each in-process measurement (a sample is enough for a rate)")
    ap.add_argument("--model", default=None, help="a saved model folder (default: the tiny random LLaMA)")
    ap.add_argument("--abstracts", type=int, default=0, help="send N abstract-sized documents, not sentences")
    ap.add_argument("--sentences-per-doc", type=int, default=8)
    ap.add_argument("--json", default=None, help="write the results here too")
    args = ap.parse_args(argv)

    from services.testing import ServiceProcess

    with tempfile.TemporaryDirectory(prefix="vaner-load-") as tmp:
        root = Path(tmp)
        home, artifact = build_model(root, args.model)
        total = args.clients * args.calls * args.docs_per_call
        texts = abstracts(args.abstracts, args.sentences_per_doc) if args.abstracts else SENTENCES
        docs = [(str(i), texts[i % len(texts)]) for i in range(total)]
        env = {"VANER_TAGGER_THREADS": str(args.threads), "VANER_TAGGER_BATCH_SIZE": str(args.batch_size),
               "VANER_SERVER_MAX_WORKERS": str(max(args.clients, 8))}
        # in-process before and after, so drift in the machine's load shows and is averaged
        sample = docs[: args.inproc_docs]
        before = in_process(artifact, sample, args.batch_size, args.threads)
        with ServiceProcess("tagger", home, env=env).start(timeout=600) as sp:
            grpc_result = over_grpc(sp.address, args.clients, args.calls, args.docs_per_call, sp.proc.pid, texts)
        after = in_process(artifact, sample, args.batch_size, args.threads)
    inproc = {"before": before, "after": after,
              "docs_per_s": round((before["docs_per_s"] + after["docs_per_s"]) / 2, 3),
              "docs_per_cpu_s": round((before["docs_per_cpu_s"] + after["docs_per_cpu_s"]) / 2, 3)}
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
        "cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg(),
        "model": args.model or "tiny random LLaMA (2 layers, width 32)",
        "documents": f"{len(texts)} abstracts of {args.sentences_per_doc} NCBI test sentences" if args.abstracts
        else "single sentences",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "grpc": grpc_result, "in_process": inproc,
        "grpc_vs_in_process_wall": round(grpc_result["docs_per_s"] / inproc["docs_per_s"], 3),
        # CPU-normalised: what each path gets done per CPU-second, server side (robust on a shared
        # machine), and with the load generator's CPU counted too (the whole cost on one box).
        "grpc_vs_in_process_server_cpu": round(grpc_result["docs_per_server_cpu_s"] / inproc["docs_per_cpu_s"], 3),
        "grpc_vs_in_process_total_cpu": round(
            grpc_result["documents"] / (grpc_result["server_cpu_s"] + grpc_result["client_cpu_s"])
            / inproc["docs_per_cpu_s"], 3),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if grpc_result["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
