"""The measured peer: spaCy's CNN NER, trained and scored on vaner's own splits with vaner's scorer.

    OMP_NUM_THREADS=1 .venv/bin/python bench/spacy_baseline.py          # the seven benchmark sets, one core
    .venv/bin/python bench/spacy_baseline.py --datasets ncbi --max-minutes 1 --out /tmp/sp.json   # a smoke run

Training is single-threaded, so on a 2-core machine run two processes with disjoint ``--datasets``
and the same ``--out``: rows are merged under a lock.

Needs the ``bench`` extra (``pip install -e .[bench]``); no download, no pretrained vectors.

What is trained, and why this way:
- the model is spaCy's default ``ner`` component on ``spacy.blank("en")``: a transition-based
  parser over a ``HashEmbedCNN`` tok2vec (NORM/PREFIX/SUFFIX/SHAPE hash embeddings, a maxout CNN),
  the architecture of scispaCy's ``en_ner_*`` models at spaCy's default size (width 96, depth 4;
  scispaCy's are 256 x 8) and without their static vectors, so nothing is downloaded. Optimiser
  (Adam 1e-3, L2 0.01, clip 1.0), dropout 0.1 and the batcher (100 -> 1000 words) are spaCy's own
  defaults from the blank pipeline's config; the loop is spaCy's ``train_while_improving``.
- Docs are built from OUR words (``Doc(vocab, words=...)``), so tokenisation is identical to
  vaner's; gold spans come from our O/B/I tags with conlleval reading (``tags_to_spans``), and
  predicted entities are mapped back to O/B/I per word and scored with ``tagger.metrics.entity_prf``,
  the strict scorer every vaner figure uses. spaCy's own ``ents_f`` is not used anywhere.
- stopping is dev-based: stop when dev F1 has not improved for ``--patience`` evaluations (one
  every ``--eval-every`` updates) or after ``--max-minutes`` (a safety cap, which the JSON reports
  as ``stopped_by`` when it bites); the best dev checkpoint is scored on the FULL test split.
- tagging speed is timed on the pre-tokenised test Docs (tokenisation excluded) with the BLAS/OpenMP
  pools limited to 1 thread and, when ``--threads`` > 1, to that many.

Resumable per dataset: rows already in ``--out`` are kept and skipped unless ``--force``.
Writes ``--out`` (JSON: one row per dataset, plus a list of the runs) and a learning-curve PNG beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagger.data import DATASETS, Sentence, load_dataset, tags_to_spans  # noqa: E402
from tagger.metrics import entity_prf  # noqa: E402
from vaner.errors import VanerError  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "spacy_baseline.json"
COLLECTIONS = {"bioner": "the seven benchmark sets", "bioner-extra": "the twelve extra corpora", "all": "both"}


@dataclass(frozen=True)
class BaselineConfig:
    patience: int = 10  # evaluations without a dev-F1 gain before stopping (spaCy's default is 8 x 200 steps)
    eval_every: int = 200  # updates between dev evaluations (spaCy's eval_frequency default)
    max_minutes: float = 90.0  # safety cap on training wall time per dataset; patience should stop first
    threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("patience", "eval_every", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_minutes <= 0:
            raise ValueError(f"--max-minutes must be > 0, got {self.max_minutes}")


# ---- conversion between vaner sentences and spaCy Docs (tokenisation stays ours) ----

def sentence_doc(vocab, words, tags=None, label: str = ""):
    """A Doc over exactly these words; with ``tags``, its entities are their conlleval spans and
    every other token is explicitly outside (not missing), as the NER oracle needs."""
    from spacy.tokens import Doc, Span

    doc = Doc(vocab, words=list(words))
    if tags is not None:
        doc.set_ents([Span(doc, s, e, label=label) for s, e in tags_to_spans(list(tags))], default="outside")
    return doc


def doc_tags(doc) -> list[str]:
    """O/B/I per word from a Doc's entities (whatever their label: one type per model)."""
    tags = ["O"] * len(doc)
    for ent in doc.ents:
        tags[ent.start] = "B"
        for i in range(ent.start + 1, ent.end):
            tags[i] = "I"
    return tags


def to_examples(nlp, sentences: list[Sentence], label: str) -> list:
    from spacy.training import Example

    return [Example(sentence_doc(nlp.vocab, s.words), sentence_doc(nlp.vocab, s.words, s.tags, label))
            for s in sentences]


def predict_tags(nlp, sentences: list[Sentence]) -> list[list[str]]:
    """Fresh Docs every call: spaCy's NER keeps entities already set on a Doc, so Docs are never reused."""
    return [doc_tags(d) for d in nlp.pipe(sentence_doc(nlp.vocab, s.words) for s in sentences)]


def score(nlp, sentences: list[Sentence]) -> dict:
    return entity_prf([s.tags for s in sentences], predict_tags(nlp, sentences))


# ---- machine and run records ----

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def command_line() -> str:
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS",) if k in os.environ)
    nice = os.nice(0)
    prefix = (env + " " if env else "") + (f"nice -n {nice} " if nice else "")
    return prefix + shlex.join([_shown(sys.executable), _shown(__file__), *sys.argv[1:]])


def _shown(path: str) -> str:
    """Relative to the working directory when under it (``.venv/bin/python``), else absolute."""
    p, cwd = Path(path).absolute(), Path.cwd()
    return str(p.relative_to(cwd)) if p.is_relative_to(cwd) else str(p)


def machine() -> dict:
    return {"nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "cpu_model": cpu_model(),
            "platform": platform.platform(), "python": platform.python_version(), "niceness": os.nice(0)}


# ---- one dataset ----

def measure_speed(nlp, sentences: list[Sentence], threads: int) -> dict:
    from threadpoolctl import threadpool_limits

    docs = [sentence_doc(nlp.vocab, s.words) for s in sentences]
    with threadpool_limits(limits=threads):
        list(nlp.pipe(sentence_doc(nlp.vocab, s.words) for s in sentences[:64]))  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in nlp.pipe(docs):
            pass
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    words = sum(len(s.words) for s in sentences)
    return {"threads": threads, "sentences": len(sentences), "words": words, "seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 3), "sentences_per_s": round(len(sentences) / wall, 1),
            "words_per_s": round(words / wall, 1), "batch_size": nlp.batch_size}


def train_dataset(name: str, cfg: BaselineConfig, data_dir: str | None, bar_position: int = 1) -> dict:
    import spacy
    from spacy.training.loop import create_train_batches, train_while_improving
    from spacy.util import fix_random_seed, registry
    from threadpoolctl import threadpool_limits
    from tqdm import tqdm

    info = DATASETS.get(name)
    started, load_start = now(), loadavg()
    train, dev, test = (load_dataset(name, split, data_dir) for split in ("train", "dev", "test"))
    label = info.category.value
    fix_random_seed(cfg.seed)
    nlp = spacy.blank("en")
    nlp.add_pipe("ner")
    examples = to_examples(nlp, train, label)
    training = nlp.config["training"]
    batcher = registry.resolve({"batcher": training["batcher"]})["batcher"]
    curve: list[dict] = []
    best = {"f1": -1.0, "bytes": None, "evaluation": -1}
    bar = tqdm(total=cfg.patience + 1, desc=f"{name} dev evals", unit="eval", position=bar_position,
               leave=False, file=sys.stderr, dynamic_ncols=True)
    clock = {"start": time.perf_counter(), "cpu": time.process_time()}

    def evaluate() -> tuple[float, dict]:
        t0 = time.perf_counter()
        m = score(nlp, dev)
        m["eval_seconds"] = round(time.perf_counter() - t0, 2)
        return m["f1"], m

    def record(step: int, epoch: int, words: int, m: dict, loss: float | None) -> None:
        point = {"evaluation": len(curve), "step": step, "epoch": epoch, "words_seen": words,
                 "minutes": round((time.perf_counter() - clock["start"]) / 60, 3),
                 "dev_f1": m["f1"], "dev_precision": m["precision"], "dev_recall": m["recall"],
                 "ner_loss": None if loss is None else round(float(loss), 3), "eval_seconds": m["eval_seconds"]}
        curve.append(point)
        if m["f1"] > best["f1"]:  # strict: the earliest best wins, as spaCy's patience counts it
            best.update(f1=m["f1"], bytes=nlp.to_bytes(), evaluation=point["evaluation"])
        bar.total = best["evaluation"] + cfg.patience + 1  # where it stops if dev F1 gains no more
        bar.update(1)
        bar.set_postfix_str(f"step {step} ep {epoch} dev F1 {m['f1']:.2f} best {best['f1']:.2f}", refresh=True)

    stopped_by = "patience"
    last = {"step": 0, "epoch": 0, "words": 0, "evaluated": True}
    with threadpool_limits(limits=cfg.threads):
        optimizer = nlp.initialize(lambda: examples)
        loop = train_while_improving(
            nlp, optimizer, create_train_batches(nlp, lambda _nlp: examples, batcher, max_epochs=0), evaluate,
            dropout=training["dropout"], eval_frequency=cfg.eval_every,
            accumulate_gradient=training["accumulate_gradient"], patience=cfg.patience * cfg.eval_every,
            max_steps=0, exclude=[], annotating_components=[], before_update=None)
        for _batch, step_info, is_best in loop:
            last = {"step": step_info["step"], "epoch": step_info["epoch"], "words": step_info["words"],
                    "evaluated": is_best is not None}
            if is_best is not None:
                record(last["step"], last["epoch"], last["words"], step_info["other_scores"],
                       step_info["losses"].get("ner"))
            if time.perf_counter() - clock["start"] > cfg.max_minutes * 60:
                stopped_by = "max_minutes"
                break
        if not last["evaluated"]:  # capped between evaluations: the latest weights still get their chance
            _, m = evaluate()
            record(last["step"], last["epoch"], last["words"], m, None)
    train_minutes = (time.perf_counter() - clock["start"]) / 60
    train_cpu_minutes = (time.process_time() - clock["cpu"]) / 60
    bar.close()
    nlp.from_bytes(best["bytes"])
    speed = [measure_speed(nlp, test, 1)]
    if cfg.threads > 1:
        speed.append(measure_speed(nlp, test, cfg.threads))
    with threadpool_limits(limits=cfg.threads):
        test_m = score(nlp, test)
    best_point = curve[best["evaluation"]]
    return {
        "dataset": name, "category": label, "collection": info.collection,
        "sentences": {"train": len(train), "dev": len(dev), "test": len(test)},
        "test": test_m, "best_dev_f1": best["f1"], "best_step": best_point["step"],
        "best_epoch": best_point["epoch"], "best_minutes": best_point["minutes"],
        "evaluations": len(curve), "steps": last["step"] + 1, "epochs_seen": last["epoch"],
        "stopped_by": stopped_by, "train_minutes": round(train_minutes, 2),
        "train_cpu_minutes": round(train_cpu_minutes, 2), "speed": speed, "learning_curve": curve,
        "seed": cfg.seed, "threads": cfg.threads, "patience": cfg.patience, "eval_every": cfg.eval_every,
        "max_minutes": cfg.max_minutes, "spacy": spacy.__version__, "date_start": started, "date_end": now(),
        "loadavg_start": load_start, "loadavg_end": loadavg(),
    }


# ---- report ----

def model_description() -> dict:
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("ner")
    cfg = nlp.config
    return {"pipeline": "spacy.blank('en') + add_pipe('ner') with spaCy's default ner model; no vectors",
            "ner_model": cfg["components"]["ner"]["model"], "training_defaults": {
                k: cfg["training"][k] for k in ("dropout", "accumulate_gradient", "optimizer", "batcher")}}


def load_report(path: Path) -> dict:
    if not path.exists():
        return {"rows": [], "runs": []}
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path}: not valid JSON ({exc}); move it away or pass another --out") from None
    report.setdefault("rows", [])
    report.setdefault("runs", [])
    return report


def update_report(path: Path, change) -> dict:
    """Re-read, ``change(report)``, write atomically, all under an exclusive lock on the folder, so
    two processes (one per core, disjoint ``--datasets``) can fill the same report."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        report = load_report(path)
        change(report)
        order = {n: i for i, n in enumerate(DATASETS.names())}
        report["rows"].sort(key=lambda r: order.get(r["dataset"], len(order)))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        tmp.replace(path)
        return report
    finally:
        os.close(fd)  # releases the lock


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row in rows:
        xs = [p["minutes"] for p in row["learning_curve"]]
        ys = [p["dev_f1"] for p in row["learning_curve"]]
        (line,) = ax.plot(xs, ys, marker=".", markersize=3, linewidth=1,
                          label=f"{row['dataset']} (test F1 {row['test']['f1']:.1f})")
        ax.plot([row["best_minutes"]], [row["best_dev_f1"]], marker="*", markersize=9, color=line.get_color())
    ax.set_xlabel("training minutes (wall, dev evaluations included)")
    ax.set_ylabel("dev F1 (strict, entity level)")
    ax.set_ylim(0, 100)
    versions = sorted({r["spacy"] for r in rows})
    ax.set_title(f"spaCy {', '.join(versions)} CNN NER baseline: dev learning curves (star: best, kept)", fontsize=9)
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_datasets(value: str) -> list[str]:
    value = value.strip().lower()
    if value in COLLECTIONS:
        return DATASETS.names(None if value == "all" else value)
    return [i.name for i in DATASETS.parse_list(value)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="bioner",
                    help="comma-separated names, or bioner (the seven benchmark sets), bioner-extra, all")
    ap.add_argument("--threads", type=int, default=BaselineConfig.threads,
                    help="BLAS/OpenMP threads for training and test scoring (speed is also timed at 1)")
    ap.add_argument("--patience", type=int, default=BaselineConfig.patience,
                    help="dev evaluations without improvement before stopping")
    ap.add_argument("--eval-every", type=int, default=BaselineConfig.eval_every, help="updates between evaluations")
    ap.add_argument("--max-minutes", type=float, default=BaselineConfig.max_minutes,
                    help="safety cap on training wall time per dataset")
    ap.add_argument("--seed", type=int, default=BaselineConfig.seed)
    ap.add_argument("--data-dir", default=None, help="benchmark folder (default: tagger.data.default_data_dir())")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="JSON report; the PNG goes beside it")
    ap.add_argument("--force", action="store_true", help="retrain datasets already in --out")
    args = ap.parse_args()
    try:
        cfg = BaselineConfig(args.patience, args.eval_every, args.max_minutes, args.threads, args.seed)
        names = parse_datasets(args.datasets)
    except (ValueError, VanerError) as exc:  # an unknown dataset is a NotFound naming the known ones
        ap.error(str(exc))
    try:
        import spacy  # noqa: F401
        import threadpoolctl  # noqa: F401
    except ImportError as exc:
        ap.error(f"{exc.name} is not installed: pip install -e '.[bench]'")
    from tqdm import tqdm

    out = Path(args.out)
    done = {r["dataset"] for r in load_report(out)["rows"]}
    todo = [n for n in names if args.force or n not in done]
    skipped = [n for n in names if n not in todo]
    if skipped:
        tqdm.write(f"already in {out} (pass --force to retrain): {', '.join(skipped)}", file=sys.stderr)
    if todo:
        train_all(todo, skipped, cfg, args.data_dir, out)
    print(json.dumps({r["dataset"]: r["test"]["f1"] for r in load_report(out)["rows"]}))
    return 0


def train_all(names: list[str], skipped: list[str], cfg: BaselineConfig, data_dir: str | None, out: Path) -> None:
    import spacy
    from tqdm import tqdm

    run = {"run": f"{now()} pid {os.getpid()}", "command": command_line(), "date_start": now(),
           "loadavg_start": loadavg(), "spacy": spacy.__version__, "config": asdict(cfg), "datasets": names,
           "skipped": skipped, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), **machine()}
    peer = model_description()

    def put_run(report: dict) -> None:
        report["peer"] = peer
        report["scorer"] = "tagger.metrics.entity_prf: strict entity-level P/R/F1 over O/B/I, conlleval semantics"
        report["runs"] = [r for r in report["runs"] if r["run"] != run["run"]] + [run]

    update_report(out, put_run)
    for name in tqdm(names, desc="datasets", unit="set", position=0, file=sys.stderr, dynamic_ncols=True):
        row = train_dataset(name, cfg, data_dir)
        row.update(run=run["run"], command=run["command"],
                   machine={k: run[k] for k in ("nproc", "affinity", "cpu_model", "platform", "niceness")})
        run["date_end"], run["loadavg_end"] = now(), loadavg()

        def put_row(report: dict, row: dict = row) -> None:
            report["rows"] = [r for r in report["rows"] if r["dataset"] != row["dataset"]] + [row]
            put_run(report)

        plot(update_report(out, put_row), out.with_suffix(".png"))
        t = row["test"]
        tqdm.write(f"{name}: test F1 {t['f1']:.2f} (P {t['precision']:.2f} R {t['recall']:.2f}), best dev "
                   f"{row['best_dev_f1']:.2f} at step {row['best_step']}, {row['train_minutes']:.1f} min, "
                   f"stopped by {row['stopped_by']}, {row['speed'][0]['sentences_per_s']:.0f} sent/s on 1 thread",
                   file=sys.stderr)

if __name__ == "__main__":
    raise SystemExit(main())
