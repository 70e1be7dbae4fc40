"""DBR ablation (issue 9; paper Table 3, Figure 5): no DBR vs retrieved DBR vs random DBR, per
dataset and per KB, at an equal budget of dataset sentences.

Protocol (what the script does):

- **Single-dataset models**, as the first block of the paper's Table 3: one model per (dataset, arm,
  KB); the dataset's own instruction for its sentences, the dataset-free one for DBR sentences.
- **Equal data, not equal steps.** Every arm trains on the same seeded stream of dataset sentences
  (``--dataset-epochs`` passes over the training split, or ``--max-dataset-sentences``): the
  trainer's ``dbr_budget="extra"`` draws each epoch's dataset sentences exactly as without DBR and
  adds the DBR sentences on top (at most one per training sentence: the set is capped at the
  training split's size and each pass brings it once), so DBR arms take more optimizer steps.
- **Dev-based stopping.** Dev evaluation every ``--eval-every`` dataset sentences (DBR sentences not
  counted; default half a pass) and at the end; a run stops when dev F1 has not improved for
  ``--patience`` evaluations. The best-on-dev checkpoint is evaluated on test once, never used for
  a choice. Same seed, backbone and hyper-parameters for every arm; constant learning rate after
  warm-up by default (paper 4.3), so stopping is the model's, not a schedule's.
- **The no-DBR arm does not depend on the KB**: it is trained once per dataset and its row is
  written under every KB name, so each KB's three rows compare like with like.
- **KB arms**: ``--kb NAME=HOME`` (repeatable) uses HOME's ``latest`` snapshot;
  ``--kb NAME=HOME@SNAPSHOT`` another snapshot of the same home (e.g. before and after
  ``kb-ingest align``). DBR sets are built (or reused from HOME's DBR cache) per dataset.
- **Resumable.** Each (KB, dataset, arm) writes its row as soon as it finishes and is skipped on a
  rerun unless ``--force``; an interrupted run resumes from its checkpoint in ``--work``. A rerun
  with another protocol, or a KB name whose snapshot changed, is refused (use another ``--out``).

Output (``--out``, default ``bench/results/dbr_ablation_openkb.json``; a PNG beside it):
``rows`` = [{"arm", "dataset", "kb", "dev_f1", "test_p", "test_r", "test_f1", "steps", "minutes"}]
(``minutes`` = training steps + dev evaluations; test evaluation and DBR build excluded), beside
``runs`` (per run: dev/test P/R/F1, dataset/DBR sentences seen, best step, early stop, timings,
machine), ``curves`` (per run: dev F1 vs dataset sentences seen, passes and training minutes),
``dbr`` (per KB/dataset/mode: set id, build seconds, ``retrieval.dbr.dbr_stats`` diagnostics and the
instruction DBR sentences were trained with), ``kbs`` (home, snapshot id, encoder, size),
``protocol``, ``machine``, ``commands``.

Build the two KB homes (open KB, then open KB + the seven training splits), e.g.::

    export OMP_NUM_THREADS=1 OPENKB=../shared/data/openkb DATA=../shared/data/bioner
    # 1. open KB alone
    kb-ingest --home runs/openkb-home umls $OPENKB/MRCONSO.RRF.gz --encoder minilm-m2v --encode-batch-size 1024 --json
    # 2. open KB + training splits: the same ingest in a second home, then the splits on top
    #    (each `dataset` call copies its --base snapshot and adds one category's entity strings)
    H=runs/openkb-train-home
    kb-ingest --home $H umls $OPENKB/MRCONSO.RRF.gz --encoder minilm-m2v --encode-batch-size 1024 --json
    kb-ingest --home $H dataset $DATA/ncbi/train.tsv $DATA/bc5cdr-disease/train.tsv --type Disease --base latest --json
    kb-ingest --home $H dataset $DATA/bc5cdr-chem/train.tsv --type Chemical --base latest --json
    kb-ingest --home $H dataset $DATA/bc2gm/train.tsv $DATA/jnlpba/train.tsv --type Gene --base latest --json
    kb-ingest --home $H dataset $DATA/linnaeus/train.tsv $DATA/s800/train.tsv --type Species --base latest --json

(Step 2 can instead run its four ``dataset`` calls in ``runs/openkb-home`` and name the open KB by its
snapshot id: ``--kb openkb=runs/openkb-home@kb-... --kb openkb+train=runs/openkb-home``.)

Run the ablation (GPU: ``--device cuda``; CPU: ``--threads 1`` per dedicated core)::

    .venv/bin/python bench/dbr_ablation.py --kb openkb=runs/openkb-home \\
        --kb openkb+train=runs/openkb-train-home --datasets ncbi,s800 --dataset-epochs 20 \\
        --patience 4 --device cuda --out bench/results/dbr_ablation_openkb.json

Two cores, one arm each: run each (dataset, arm) as its own process with its own ``--out`` (and a
``--work`` per DBR variant), then ``--merge A.json B.json ... --out RESULTS.json`` joins them (refused
unless the protocols and KB snapshots agree; a file holding only the no-DBR arm joins any DBR variant,
since that arm never sees a DBR setting). ``--dbr-corpus-agreement 0.5`` is the corpus-agreement
filter of ``retrieval/corpus_agreement.py``, recorded in the protocol.

``--dbr-top-k 20 --dbr-max-uses 1`` is breadth DBR (docs/dbr.md): retrieved names, each in one DBR
sentence at most, so the set spreads over as many distinct names as random mode deals.

``--dbr-only`` builds every DBR set and records its diagnostics without training (minutes on a CPU
with ``minilm-m2v``): worth a look before hours of training. Smoke run (about 40 min per dataset on
one core, 16 layers): add ``--max-dataset-sentences 400 --eval-every 100 --dev-max 100 --test-max 200
--work /tmp/dbr-smoke --out /tmp/dbr-smoke.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ARMS = ("none", "retrieved", "random")
ROW_KEYS = ("arm", "dataset", "kb", "dev_f1", "test_p", "test_r", "test_f1", "steps", "minutes")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "dbr_ablation_openkb.json"
# settings that may change between a run and its resumption without changing what is measured
RUNTIME_KEYS = ("output_dir", "threads", "device")


@dataclass(frozen=True)
class KbArm:
    name: str
    home: Path
    snapshot: str = "latest"


def parse_kb(spec: str) -> KbArm:
    name, sep, rest = spec.partition("=")
    home, _, snapshot = rest.partition("@")
    if not sep or not name.strip() or not home.strip() or "/" in name:
        raise SystemExit(f"--kb {spec!r}: expected NAME=HOME or NAME=HOME@SNAPSHOT (NAME without '/')")
    return KbArm(name.strip(), Path(home.strip()), snapshot.strip() or "latest")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kb", action="append", default=[], metavar="NAME=HOME[@SNAPSHOT]",
                    help="a KB arm (repeatable): a vaner home and its snapshot (default latest)")
    ap.add_argument("--datasets", default="ncbi,s800")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--data-dir", default=None)
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--dataset-epochs", type=int, default=20, help="passes over the training split (the budget)")
    budget.add_argument("--max-dataset-sentences", type=int, default=None,
                        help="budget in dataset sentences instead (rounded up to whole steps)")
    ap.add_argument("--eval-every", type=int, default=None,
                    help="dev evaluation every N dataset sentences (default: half the training split)")
    ap.add_argument("--patience", type=int, default=4, help="dev evaluations without a new best before stopping")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1.5e-4)
    ap.add_argument("--head-lr", type=float, default=5e-4)
    ap.add_argument("--lr-schedule", choices=("constant", "linear"), default="constant")
    ap.add_argument("--warmup-ratio", type=float, default=0.03)
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--num-layers", type=int, default=16, help="first N decoder layers (0: all)")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--lora-dropout", type=float, default=0.0, help="0 is 2.4x faster on CPU")
    ap.add_argument("--instruction", choices=("paper", "compact"), default="paper")
    ap.add_argument("--seed", type=int, default=13, help="training seed (every arm)")
    ap.add_argument("--dbr-seed", type=int, default=0)
    ap.add_argument("--dev-max", type=int, default=0, help="dev sentences per evaluation (0: the whole split)")
    ap.add_argument("--test-max", type=int, default=0, help="test sentences, seeded sample (0: the whole split)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--work", default="runs/dbr-ablation", help="run folders (checkpoints, best models)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--force", action="store_true", help="retrain runs that already have a row")
    ap.add_argument("--dbr-max-positive", type=int, default=10,
                    help="entities of the sentence's type per DBR sentence (the density cap; paper-like: 10)")
    ap.add_argument("--dbr-max-negative", type=int, default=5, help="entities of other types per DBR sentence")
    ap.add_argument("--dbr-top-k", type=int, default=5, help="KB entities retrieved per mined phrase")
    ap.add_argument("--dbr-max-uses", type=int, default=0,
                    help="DBR sentences one KB name may appear in (0: no limit, the paper; 1: every name once, "
                         "the breadth random sampling has by construction)")
    ap.add_argument("--dbr-corpus-agreement", type=float, default=0.0,
                    help="drop DBR entities whose label the training split contradicts (retrieval.corpus_agreement); "
                         "0: keep all, as the paper")
    ap.add_argument("--merge", nargs="+", metavar="RESULTS", default=None,
                    help="merge results files written by parallel processes (one arm each, same protocol and KB "
                         "snapshots) into --out, then report; trains nothing")
    ap.add_argument("--dbr-only", action="store_true",
                    help="build (or reuse) the DBR sets and record their cost and diagnostics; train nothing")
    args = ap.parse_args(argv)
    if not args.kb and not args.merge:
        ap.error("--kb is required (or --merge)")
    args.kbs = [parse_kb(s) for s in args.kb]
    if len({k.name for k in args.kbs}) != len(args.kbs):
        raise SystemExit("--kb names must be distinct")
    args.arm_list = [a.strip() for a in args.arms.split(",") if a.strip()]
    bad = [a for a in args.arm_list if a not in ARMS]
    if bad or not args.arm_list:
        raise SystemExit(f"--arms: expected a subset of {','.join(ARMS)}, not {args.arms!r}")
    args.dataset_list = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for name in ("dataset_epochs", "max_dataset_sentences", "eval_every", "patience"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    return args


def protocol(args: argparse.Namespace) -> dict[str, Any]:
    """What must be identical for rows to be comparable (checked when a results file is reused)."""
    keys = ("dataset_epochs", "max_dataset_sentences", "eval_every", "patience", "batch_size", "lr", "head_lr",
            "lr_schedule", "warmup_ratio", "backbone", "num_layers", "max_length", "lora_dropout", "instruction",
            "seed", "dbr_seed", "dev_max", "test_max", "data_dir")
    if args.max_dataset_sentences:
        keys = tuple(k for k in keys if k != "dataset_epochs")
    return {"models": "single-dataset", "budget": "equal dataset sentences; DBR sentences extra (<= 1 per "
            "training sentence)", "dbr": {"max_positive": args.dbr_max_positive,
                                            "max_negative": args.dbr_max_negative, "top_k": args.dbr_top_k,
                                            **({"corpus_agreement": args.dbr_corpus_agreement}
                                               if args.dbr_corpus_agreement else {}),
                                            **({"max_uses": args.dbr_max_uses} if args.dbr_max_uses else {})},
            **{k: getattr(args, k) for k in keys}}


def budget(args: argparse.Namespace, n_train: int) -> tuple[int, int | None, int]:
    """(epochs, steps_per_epoch, eval_every) for a training split of ``n_train`` sentences:
    ``--dataset-epochs`` whole passes, or ``--max-dataset-sentences`` in whole steps."""
    if args.max_dataset_sentences:
        per_epoch_steps = math.ceil(min(args.max_dataset_sentences, n_train) / args.batch_size)
        epochs = math.ceil(args.max_dataset_sentences / (per_epoch_steps * args.batch_size))
        per_epoch = per_epoch_steps * args.batch_size
        steps: int | None = per_epoch_steps
    else:
        epochs, steps, per_epoch = args.dataset_epochs, None, n_train
    return epochs, steps, args.eval_every or max(1, per_epoch // 2)


def machine(device: str) -> str:
    text = f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.processor() or platform.system()}"
    try:
        import torch

        if device != "cpu" and torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name(0)}"
        text += f", torch {torch.__version__}"
    except Exception:  # noqa: BLE001 - a description only
        pass
    return text


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


# ---------------------------------------------------------------- results file


def load_results(path: Path) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    return {"rows": [], "runs": {}, "curves": {}, "dbr": {}, "kbs": {}, "commands": []}


def save_results(path: Path, results: dict[str, Any]) -> None:
    results["rows"] = make_rows(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    os.replace(tmp, path)


def run_key(kb: str, dataset: str, arm: str) -> str:
    return f"none/{dataset}" if arm == "none" else f"{kb}/{dataset}/{arm}"


def make_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (KB, dataset, arm) with a finished run; the no-DBR run appears under every KB."""
    runs = results["runs"]
    datasets = list(dict.fromkeys(r["dataset"] for r in runs.values()))
    rows = []
    for kb in results["kbs"]:
        for dataset in datasets:
            for arm in ARMS:
                run = runs.get(run_key(kb, dataset, arm))
                if run is None:
                    continue
                rows.append({"arm": arm, "dataset": dataset, "kb": kb, "dev_f1": run["dev"]["f1"],
                             "test_p": run["test"]["precision"], "test_r": run["test"]["recall"],
                             "test_f1": run["test"]["f1"], "steps": run["steps"], "minutes": run["minutes"]})
    return rows


def check_same(what: str, recorded: Any, current: Any, out: Path) -> None:
    if recorded is not None and recorded != current:
        raise SystemExit(f"{out}: {what} differs from the one its rows were measured with "
                         f"({recorded!r} != {current!r}); use another --out (or move the file)")


KB_CONTENT = ("kind", "encoder", "terms", "concepts")


def join_kb(what: str, recorded: dict[str, Any] | None, current: dict[str, Any], out: Path) -> dict[str, Any]:
    """The KB record of a results file after adding ``current``. A re-ingest of the same release with the
    same encoder gets a new snapshot id and the same content (a session that lost its home rebuilds it):
    such snapshots are accepted and listed under ``equivalent_snapshots``. Their approximate (HNSW)
    indexes are not bit-identical, so a few neighbours differ: on NCBI the retrieved DBR set of a rebuilt
    open KB had 3,462 distinct positives where the first build's had 3,422."""
    if recorded is None or recorded["snapshot"] == current["snapshot"]:
        return {**(recorded or {}), **current}  # keeps the equivalent snapshots listed so far
    check_same(what + " (kind, encoder, terms, concepts)", {k: recorded.get(k) for k in KB_CONTENT},
               {k: current.get(k) for k in KB_CONTENT}, out)
    seen = list(dict.fromkeys([*recorded.get("equivalent_snapshots", [recorded["snapshot"]]), current["snapshot"]]))
    return {**recorded, "equivalent_snapshots": seen}


def _without_dbr(protocol_: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if protocol_ is None else {k: v for k, v in protocol_.items() if k != "dbr"}


def merge_results(paths: list[Path], out: Path) -> dict[str, Any]:
    """Union of results files measured in parallel (e.g. one arm per core): refused unless every file has
    the same protocol and the same snapshot for each KB name, and no run appears twice with other figures."""
    parts = []
    for path in paths:
        if not path.exists():
            raise SystemExit(f"--merge: {path} does not exist")
        part = load_results(path)
        none_only = bool(part["runs"]) and all(key.startswith("none/") for key in part["runs"])
        parts.append((none_only, path, part))
    parts.sort(key=lambda x: x[0])  # the DBR arms set the protocol; a no-DBR-only file joins any DBR variant
    merged = load_results(out) if out.exists() else {**parts[0][2], "runs": {}, "curves": {}, "commands": []}
    for none_only, path, part in parts:
        if none_only:
            # the no-DBR arm never sees a DBR setting: one run serves every DBR variant of the protocol
            check_same("protocol (DBR settings aside)", _without_dbr(merged.get("protocol")),
                       _without_dbr(part.get("protocol")), path)
            part["dbr"] = {}
        else:
            check_same("protocol", merged.get("protocol"), part.get("protocol"), path)
            merged["protocol"] = part.get("protocol")
        merged["machine"] = merged.get("machine") or part.get("machine")
        for name, info in part["kbs"].items():
            merged["kbs"][name] = join_kb(f"KB {name!r}", merged["kbs"].get(name), info, path)
        for key, run in part["runs"].items():
            if key in merged["runs"] and merged["runs"][key] != run:
                raise SystemExit(f"--merge: {path} holds another run {key!r} than the files before it")
            merged["runs"][key] = run
            merged["curves"][key] = part["curves"].get(key, [])
        merged["dbr"].update({k: v for k, v in part["dbr"].items() if k not in merged["dbr"] or not v.get("cached")})
        merged["commands"] += [c for c in part["commands"] if c not in merged["commands"]]
    return merged


# ---------------------------------------------------------------- one run


def train_config(args: argparse.Namespace, dataset: str, n_train: int, out_dir: Path):  # noqa: ANN201 - TrainConfig
    from tagger.config import TaggerConfig, TrainConfig
    from tagger.instructions import InstructionTemplate

    epochs, steps, eval_every = budget(args, n_train)
    model = TaggerConfig(backbone=args.backbone, num_layers=args.num_layers or None, max_length=args.max_length,
                         lora_dropout=args.lora_dropout, template=InstructionTemplate.named(args.instruction))
    return TrainConfig(datasets=(dataset,), data_dir=args.data_dir, output_dir=str(out_dir), model=model,
                       epochs=epochs, steps_per_epoch=steps, batch_size=args.batch_size, lr=args.lr,
                       head_lr=args.head_lr, lr_schedule=args.lr_schedule, warmup_ratio=args.warmup_ratio,
                       dbr_ratio=1.0, dbr_budget="extra", eval_every=eval_every, patience=args.patience,
                       dev_max_sentences=args.dev_max or None, seed=args.seed, checkpoint_every=100,
                       threads=args.threads, device=args.device)


def check_resumable(config: Any, force: bool) -> None:
    """A run folder holding a checkpoint of another configuration would resume the wrong run."""
    run_dir = config.run_dir
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
        return
    saved_path = run_dir / "checkpoint" / "tagger_config.json"
    if not saved_path.exists():
        return
    saved = json.loads(saved_path.read_text()).get("train_config", {})
    current = json.loads(json.dumps(config.to_dict()))
    diff = sorted(k for k in set(saved) | set(current) if k not in RUNTIME_KEYS and saved.get(k) != current.get(k))
    if diff:
        raise SystemExit(f"{run_dir} holds a checkpoint of another configuration ({', '.join(diff)}); "
                         "use --force to start it afresh or another --work")


def run_arm(args: argparse.Namespace, kb: str | None, dataset: str, arm: str, train_split: list,
            tests: list, extra: list, dbr_id: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train one arm, evaluate its best-on-dev model on test once; (run record, learning curve)."""
    import tagger.train as tagger_train
    from tagger.evaluate import evaluate
    from tagger.extract import load_for_inference
    from vaner.progress import ProgressBars

    out_dir = Path(args.work) / (f"none/{dataset}" if arm == "none" else f"{kb}/{dataset}/{arm}")
    config = train_config(args, dataset, len(train_split), out_dir)
    check_resumable(config, args.force)
    used = min(len(extra), int(config.dbr_ratio * len(train_split)))  # what train() keeps of the set
    t0 = time.perf_counter()
    with ProgressBars(unit="step", interval=60.0) as bars:  # hour-long runs: a line a minute with the ETA
        result = tagger_train.train(config, extra_sentences=extra, resume=True, progress=bars)
    wall = time.perf_counter() - t0
    best = json.loads((result.artifact_dir / "tagger_config.json").read_text())
    t1 = time.perf_counter()
    test = evaluate(load_for_inference(result.artifact_dir, device=args.device, threads=args.threads or 0), tests)
    test_seconds = time.perf_counter() - t1
    dev = result.dev_metrics.get("datasets", {}).get(dataset, {})
    pick = ("precision", "recall", "f1")
    run = {"kb": kb, "dataset": dataset, "arm": arm, "run_dir": str(out_dir), "dbr_set": dbr_id,
           "train_sentences": len(train_split), "dbr_sentences": used,
           "dataset_sentences": result.dataset_sentences, "sentences": result.sentences,
           "dbr_sentences_seen": result.sentences - result.dataset_sentences,
           "steps": result.steps, "best_step": best.get("step"),
           "best_dataset_sentences": best.get("dataset_sentences"), "stopped_early": result.stopped_early,
           "epochs_planned": config.epochs, "eval_every": config.eval_every,
           "dev": {k: round(float(dev.get(k, 0.0)), 2) for k in pick},
           "test": {**{k: round(float(test[k]), 2) for k in pick}, "support": test.get("support"),
                    "sentences": test.get("sentences")},
           "minutes": round((result.train_seconds + result.eval_seconds) / 60, 2),
           "train_seconds": round(result.train_seconds, 1), "eval_seconds": round(result.eval_seconds, 1),
           "wall_seconds_this_call": round(wall, 1), "test_seconds": round(test_seconds, 1),
           "tokens_per_second": round(result.tokens_per_second, 1), "device": args.device,
           "machine": machine(args.device), "finished_at": now()}
    curve = [{"step": h["step"], "dataset_sentences": h.get("dataset_sentences"), "sentences": h.get("sentences"),
              "passes": round(h.get("dataset_sentences", 0) / max(1, len(train_split)), 3),
              "minutes": round(h.get("train_seconds", 0.0) / 60, 3), "dev_f1": h["dev_f1"]}
             for h in result.history if "dev_f1" in h]
    return run, curve


# ---------------------------------------------------------------- DBR


def dbr_for(args: argparse.Namespace, arm: KbArm, kb: Any, settings: Any, snapshot_id: str, dataset: str,
            mode: str, train_split: list, results: dict[str, Any]) -> tuple[list, str]:
    """Build (or reuse) the DBR set of one dataset and record its cost and diagnostics."""
    from retrieval.dbr import DbrBuilder, DbrParams, dbr_stats
    from tagger.instructions import InstructionTemplate
    from vaner.corpus import DATASETS

    t0 = time.perf_counter()
    params = DbrParams(mode=mode, seed=args.dbr_seed, max_positive=args.dbr_max_positive,
                       max_negative=args.dbr_max_negative, top_k=args.dbr_top_k,
                       corpus_agreement=args.dbr_corpus_agreement, max_uses=args.dbr_max_uses)
    dbr = DbrBuilder(settings, kb).build([dataset], params, snapshot=snapshot_id, data_dir=args.data_dir)
    kb.close()  # the embedded store serves one process: free it for the other arms during training
    wall = time.perf_counter() - t0
    key = f"{arm.name}/{dataset}/{mode}"
    previous = results["dbr"].get(key)
    if not (dbr.cached and previous and previous.get("id") == dbr.id):  # keep the cost of the real build
        template = InstructionTemplate.named(args.instruction)
        category = DATASETS.get(dataset).category
        results["dbr"][key] = {
            "cached": dbr.cached, "wall_seconds_this_call": round(wall, 2),
            "instruction": template.render(category, None), "dataset_instruction": template.render(category, dataset),
            **dbr_stats(dbr, {dataset: train_split})}
    return dbr.load(), dbr.id


# ---------------------------------------------------------------- report


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    kbs = list(results["kbs"])
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    if not rows or not kbs:
        return
    colours = {"none": "tab:gray", "retrieved": "tab:red", "random": "tab:blue"}
    n_rows, n_cols = 2 * len(kbs) + 1, len(datasets)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5 * n_cols, 3.2 * n_rows), squeeze=False)
    for i, kb in enumerate(kbs):
        for j, dataset in enumerate(datasets):
            for k, (x_key, x_label) in enumerate((("passes", "dataset passes"), ("minutes", "training minutes"))):
                ax = axes[2 * i + k][j]
                for arm in ARMS:
                    curve = results["curves"].get(run_key(kb, dataset, arm))
                    if curve:
                        ax.plot([p[x_key] for p in curve], [p["dev_f1"] for p in curve], "o-", ms=3,
                                color=colours[arm], label=arm)
                ax.set_title(f"{dataset} | KB {kb}: dev F1 vs {x_label}", fontsize=9)
                ax.set_xlabel(x_label, fontsize=8)
                ax.set_ylabel("dev F1", fontsize=8)
                ax.legend(fontsize=7)
    for j, dataset in enumerate(datasets):
        ax = axes[-1][j]
        width = 0.8 / len(ARMS)
        for a, arm in enumerate(ARMS):
            values = [next((r["test_f1"] for r in rows if r["kb"] == kb and r["dataset"] == dataset
                            and r["arm"] == arm), float("nan")) for kb in kbs]
            xs = [x + (a - 1) * width for x in range(len(kbs))]
            bars = ax.bar(xs, values, width, color=colours[arm], label=arm)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(range(len(kbs)), kbs, fontsize=8)
        ax.set_title(f"{dataset}: test F1 of the best-on-dev model", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown(results: dict[str, Any]) -> str:
    lines = ["| dataset | KB | arm | dev F1 | test P / R / F1 | steps | dataset sents | DBR sents | stopped early | min |",
             "|---|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in results["rows"]:
        run = results["runs"][run_key(r["kb"], r["dataset"], r["arm"])]
        lines.append(f"| {r['dataset']} | {r['kb']} | {r['arm']} | {r['dev_f1']:.2f} | {r['test_p']:.1f} / "
                     f"{r['test_r']:.1f} / **{r['test_f1']:.2f}** | {r['steps']} | {run['dataset_sentences']} | "
                     f"{run['dbr_sentences_seen']} | {'yes' if run['stopped_early'] else 'no'} | {r['minutes']:.1f} |")
    lines += ["", "| KB/dataset/mode | DBR sents | coverage | entities/sent | pos share | with a positive | "
              "distinct concepts | gold injected | build s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, d in results["dbr"].items():
        lines.append(f"| {key} | {d['sentences']} | {d['coverage']} | {d['entities_per_sentence']} | "
                     f"{d['positive_share']} | {d['share_with_positive']} | {d['distinct_concepts']} | "
                     f"{d.get('gold_mentions_injected')} | {d['build_seconds']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from kb_ingest import kb as kb_module
    from tagger.train import _sample
    from vaner.corpus import DATASETS, load_dataset
    from vaner.settings import Settings

    out = Path(args.out)
    if args.merge:
        results = merge_results([Path(p) for p in args.merge], out)
        results["commands"].append({"date": now(), "command": " ".join(
            sys.argv if argv is None else ["dbr_ablation.py", *argv])})
        save_results(out, results)
        plot(results, out.with_suffix(".png"))
        print(markdown(results))
        return 0
    results = load_results(out)
    check_same("protocol", results.get("protocol"), json.loads(json.dumps(protocol(args))), out)
    results["protocol"] = protocol(args)
    results["machine"] = machine(args.device)
    results["commands"].append({"date": now(), "command": " ".join(sys.argv if argv is None else ["dbr_ablation.py",
                                                                                                   *argv])})
    datasets = [DATASETS.get(d).name for d in args.dataset_list]
    dbr_arms = [a for a in args.arm_list if a != "none"]

    # open every KB first: a wrong home or snapshot fails before hours of training
    kbs: dict[str, tuple[KbArm, Any, Any, str]] = {}
    for arm in args.kbs:
        if not arm.home.is_dir():
            raise SystemExit(f"--kb {arm.name}: {arm.home} is not a vaner home (build it first, see --help)")
        settings = Settings(home=arm.home)
        kb = kb_module.KnowledgeBase(settings)
        snap = kb.get_snapshot(arm.snapshot)
        info = {"home": str(arm.home), "snapshot_ref": arm.snapshot, "snapshot": str(snap.id),
                "encoder": getattr(snap, "encoder", None), "kind": getattr(snap, "kind", None),
                "terms": getattr(snap, "terms", None), "concepts": getattr(snap, "concepts", None)}
        results["kbs"][arm.name] = join_kb(f"KB {arm.name!r}", results["kbs"].get(arm.name), info, out)
        kbs[arm.name] = (arm, kb, settings, str(snap.id))
    save_results(out, results)

    try:
        for dataset in datasets:
            train_split = load_dataset(dataset, "train", args.data_dir)
            tests = _sample(load_dataset(dataset, "test", args.data_dir), args.test_max or None, args.seed)
            todo: list[tuple[str | None, str]] = [(None, "none")] if "none" in args.arm_list else []
            todo += [(name, arm) for name in kbs for arm in dbr_arms]
            for kb_name, arm in todo:
                key = run_key(kb_name or "", dataset, arm)
                if args.dbr_only:
                    if arm != "none":
                        kb_arm, kb, settings, snap_id = kbs[kb_name]
                        dbr_for(args, kb_arm, kb, settings, snap_id, dataset, arm, train_split, results)
                        save_results(out, results)
                    continue
                if key in results["runs"] and not args.force:
                    print(f"{key}: done, skipped (--force to retrain)", file=sys.stderr)
                    continue
                extra, dbr_id = [], None
                if arm != "none":
                    kb_arm, kb, settings, snap_id = kbs[kb_name]
                    extra, dbr_id = dbr_for(args, kb_arm, kb, settings, snap_id, dataset, arm, train_split, results)
                    save_results(out, results)
                print(f"{key}: training ({len(train_split)} train sentences, {len(extra)} DBR)", file=sys.stderr)
                run, curve = run_arm(args, kb_name, dataset, arm, train_split, tests, extra, dbr_id)
                results["runs"][key] = run
                results["curves"][key] = curve
                save_results(out, results)
                plot(results, out.with_suffix(".png"))
    finally:
        for _, kb, _, _ in kbs.values():
            close = getattr(kb, "close", None)
            if close:
                close()
    save_results(out, results)
    plot(results, out.with_suffix(".png"))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
