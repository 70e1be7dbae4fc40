"""Multi-dataset instruction tuning of the tagger (VANER 3.5, loss eq. 11).

Every sentence carries its dataset's instruction; DBR sentences (dataset ``None``), and a seeded
``free_instruction_share`` of the others, carry the dataset-free one, and all losses are summed into
one objective. A multi-type model is trained on
the same single-type corpora: each sentence supervises only its own category's head (the label
tensor and loss are the model's, :meth:`VanerTagger.collate`), and sentences are never merged
across categories, so two corpora labelling the same words both count. A run folder holds a resumable
``checkpoint/`` (model, optimizer, scheduler, position in the seeded plan), the ``best/`` model by
dev F1, ``history.jsonl`` and ``learning_curve.png``; a run killed at any point resumes from its
last checkpoint and replays exactly the same plan.

DBR sentences either share each epoch's steps with the dataset sentences (``dbr_budget="shared"``,
one more mixed source) or come on top of them (``"extra"``: the epoch draws exactly the dataset
sentences a run without DBR would, then adds DBR sentences, so a DBR ablation compares equal data,
not equal steps). Dev evaluation runs at each epoch end, or every ``eval_every`` dataset sentences
(DBR sentences are not counted, so arms with and without DBR are evaluated at the same points of
their dataset stream); ``patience`` stops a run whose dev F1 has not improved for that many
evaluations, and the best-on-dev model is what the run returns.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tagger.config import TrainConfig
from tagger.data import DATASETS, Sentence, benchmark_eval_texts, load_dataset, read_conll
from tagger.encoding import EncodedInput
from tagger.metrics import entity_prf
from tagger.mixing import epoch_plan, epoch_plan_indexed, length_bucketed_batches
from tagger.model import VanerTagger, WordQuery
from vaner.categories import Category
from vaner.errors import InvalidArgument
from vaner.progress import ProgressCallback, ProgressTracker

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
BEST_DIR = "best"
STATE_FILE = "trainer_state.pt"


@dataclass
class TrainResult:
    run_dir: Path
    artifact_dir: Path                      # the best model by dev F1
    dev_metrics: dict                       # of the best model: {"f1": macro, "datasets": {...}}
    history: list[dict] = field(default_factory=list)
    tokens_per_second: float = 0.0
    steps: int = 0
    dataset_sentences: int = 0              # dataset sentences trained on (DBR not counted)
    sentences: int = 0                      # every sentence trained on, DBR included
    train_seconds: float = 0.0              # in optimizer steps
    eval_seconds: float = 0.0               # in dev evaluations
    stopped_early: bool = False             # patience ran out before the planned epochs


@dataclass
class TrainingData:
    sources: list[list[Sentence]]
    source_names: list[str]
    dev: dict[str, list[Sentence]]
    extra: list[Sentence] = field(default_factory=list)  # DBR sentences added on top (dbr_budget="extra")
    dataset_sources: int | None = None  # sources[:dataset_sources] hold dataset sentences; a shared DBR source follows

    def __post_init__(self) -> None:
        if self.dataset_sources is None:
            self.dataset_sources = len(self.sources)

    @property
    def dataset_size(self) -> int:
        return sum(len(s) for s in self.sources[:self.dataset_sources])


def _sample(sentences: list[Sentence], n: int | None, seed: int) -> list[Sentence]:
    if n is None or len(sentences) <= n:
        return sentences
    rng = random.Random(f"{seed}:dev")
    return [sentences[i] for i in sorted(rng.sample(range(len(sentences)), n))]


def load_training_data(config: TrainConfig, extra_sentences: Sequence[Sentence] = ()) -> TrainingData:
    sources: list[list[Sentence]] = []
    names: list[str] = []
    dev: dict[str, list[Sentence]] = {}
    held_out_texts: set[tuple[str, ...]] | None = None
    for name in config.datasets:
        train_split = load_dataset(name, "train", config.data_dir)
        if not DATASETS.get(name).benchmark:
            # extra corpora share PubMed abstracts with the benchmark sets (e.g. BioNLP09 and
            # JNLPBA's test split): never train on a sentence that a benchmark evaluates
            if held_out_texts is None:
                held_out_texts = benchmark_eval_texts(config.data_dir)
            kept = [s for s in train_split if s.words not in held_out_texts]
            if len(kept) < len(train_split):
                log.info("%s: dropped %d training sentences that occur in a benchmark dev/test split",
                         name, len(train_split) - len(kept))
            train_split = kept
        sources.append(train_split)
        names.append(name)
        if config.dev_datasets is not None and name not in config.dev_datasets:
            continue
        dev[name] = _sample(load_dataset(name, "dev", config.data_dir), config.dev_max_sentences, config.seed)
    for path, category in config.train_files:
        sents = read_conll(path, Category.parse(category), dataset=None)
        # no dev file given for an ad-hoc CoNLL file: hold out a seeded 10 % for model selection
        rng = random.Random(f"{config.seed}:{Path(path).name}")
        idx = list(range(len(sents)))
        rng.shuffle(idx)
        cut = max(1, len(sents) // 10) if len(sents) >= 10 else 0
        held = set(idx[:cut])
        label = Path(path).name
        sources.append([s for i, s in enumerate(sents) if i not in held])
        names.append(label)
        dev[label] = _sample([sents[i] for i in sorted(held)], config.dev_max_sentences, config.seed)
    if not any(sources):
        raise InvalidArgument("no training sentences found")
    n_dataset = len(sources)
    extra: list[Sentence] = []
    if extra_sentences and config.dbr_ratio > 0:
        # at most dbr_ratio DBR sentences per dataset sentence (the paper: one per training sentence);
        # DBR sets are shuffled across datasets, so a prefix still covers every dataset
        extra = list(extra_sentences)[:int(config.dbr_ratio * sum(len(s) for s in sources))]
    if extra and config.dbr_budget == "shared":
        sources.append(extra)
        names.append("dbr")
        extra = []
    return TrainingData(sources, names, dev, extra, n_dataset)


def dataset_sentences_per_epoch(config: TrainConfig, data: TrainingData) -> int:
    """``dbr_budget="extra"``: the dataset sentences of one epoch (a pass, or ``steps_per_epoch``
    full steps of them); DBR sentences come on top."""
    if config.steps_per_epoch:
        return config.steps_per_epoch * config.batch_size * config.grad_accum
    return data.dataset_size


def extra_sentences_per_epoch(data: TrainingData, n_dataset: int) -> int:
    """DBR sentences added to an epoch of ``n_dataset`` dataset sentences: the set's share of the
    training data, so one pass over the data brings the whole set once, and never more than the
    dataset sentences (the set was capped at ``dbr_ratio`` per dataset sentence)."""
    if not data.extra:
        return 0
    return n_dataset * len(data.extra) // max(1, data.dataset_size)


def steps_per_epoch_for(config: TrainConfig, data: TrainingData) -> int:
    """Optimizer steps per epoch: as configured, else one pass over the training sentences; with
    ``dbr_budget="extra"`` the configured steps are dataset steps and DBR adds steps on top."""
    per_step = config.batch_size * config.grad_accum
    if config.dbr_budget == "extra":
        n_dataset = dataset_sentences_per_epoch(config, data)
        n = n_dataset + extra_sentences_per_epoch(data, n_dataset)
        return max(1, math.ceil(math.ceil(n / config.batch_size) / config.grad_accum))
    return config.steps_per_epoch or max(1, math.ceil(sum(len(s) for s in data.sources) / per_step))


def epoch_sentences(data: TrainingData, config: TrainConfig, epoch: int,
                    steps_per_epoch: int) -> list[tuple[Sentence, bool]]:
    """One epoch's sentences in draw order, each flagged True when it is a dataset sentence (not DBR).
    With ``dbr_budget="extra"`` the dataset part is exactly what the same config draws without DBR."""
    factors = [dict(config.mix_weights).get(n, 1.0) for n in data.source_names]
    if config.dbr_budget == "extra":
        n_dataset = dataset_sentences_per_epoch(config, data)
        drawn = [(s, True) for _, s in epoch_plan_indexed(data.sources, n_dataset, config.mix_temperature,
                                                          config.seed, epoch, factors)]
        n_extra = extra_sentences_per_epoch(data, n_dataset)
        # a seed of its own: with the dataset's seed the DBR set would be walked in the same order
        extra_seed = zlib.crc32(f"{config.seed}:dbr".encode())
        return drawn + [(s, False) for s in epoch_plan([data.extra], n_extra, 1.0, extra_seed, epoch)]
    per_step = config.batch_size * config.grad_accum
    plan = epoch_plan_indexed(data.sources, steps_per_epoch * per_step, config.mix_temperature, config.seed, epoch,
                              factors)
    return [(s, si < data.dataset_sources) for si, s in plan]


def instruction_datasets(sentences: Sequence[Sentence], config: TrainConfig, epoch: int) -> list[str | None]:
    """The dataset each sentence's instruction names this epoch: its own, or None (the dataset-free
    instruction) for a seeded ``free_instruction_share`` of them. Why: unseen text is asked with the
    dataset-free instruction, which the model otherwise meets only on DBR sentences; a model trained
    on named corpora alone tags unseen text several points worse than the corpora it can name."""
    if not config.free_instruction_share:
        return [s.dataset for s in sentences]
    rng = random.Random(zlib.crc32(f"{config.seed}:free-instruction:{epoch}".encode()))
    return [None if s.dataset and rng.random() < config.free_instruction_share else s.dataset for s in sentences]


def epoch_schedule(model: VanerTagger, data: TrainingData, config: TrainConfig, epoch: int,
                   steps_per_epoch: int) -> tuple[list[list[EncodedInput]], list[int]]:
    """The encoded micro-batches of one epoch, in training order, and how many dataset (not DBR)
    sentences each holds: a pure function of (data, config, epoch), which is what lets a resumed run
    replay its plan and a test rebuild a step's batch."""
    drawn = epoch_sentences(data, config, epoch, steps_per_epoch)
    datasets = instruction_datasets([s for s, _ in drawn], config, epoch)
    encoded = [model.encoder.encode(s.words, s.category, d, s.tags) for (s, _), d in zip(drawn, datasets, strict=True)]
    order = length_bucketed_batches([len(e.input_ids) for e in encoded], config.batch_size, config.seed, epoch)
    return [[encoded[i] for i in batch] for batch in order], [sum(drawn[i][1] for i in batch) for batch in order]


def epoch_batches(model: VanerTagger, data: TrainingData, config: TrainConfig, epoch: int,
                  steps_per_epoch: int) -> list[list[EncodedInput]]:
    """The encoded micro-batches of one epoch, in training order (see :func:`epoch_schedule`)."""
    return epoch_schedule(model, data, config, epoch, steps_per_epoch)[0]


def evaluate_sentences(model: VanerTagger, sentences: Sequence[Sentence], batch_size: int = 32) -> dict:
    queries = [WordQuery(s.words, s.category, s.dataset) for s in sentences]
    pred = model.predict_tags(queries, batch_size=batch_size)
    return entity_prf([list(s.tags) for s in sentences], pred)


def evaluate_dev(model: VanerTagger, dev: dict[str, list[Sentence]], batch_size: int = 32) -> dict:
    per = {name: evaluate_sentences(model, sents, batch_size) for name, sents in dev.items() if sents}
    macro = float(np.mean([m["f1"] for m in per.values()])) if per else 0.0
    return {"f1": round(macro, 4), "datasets": per}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _lr_lambda(total_steps: int, warmup: int, schedule: str = "linear"):  # noqa: ANN202
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        if schedule == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))
    return f


def _atomic_replace(tmp: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def plot_learning_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history if "loss" in h]
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h for h in history if "dev_f1" in h]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    if steps:
        ax1.plot(steps, losses, color="tab:blue", alpha=0.6, label="train loss")
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("train loss", color="tab:blue")
    ax2 = ax1.twinx()
    if evals:
        ax2.plot([h["step"] for h in evals], [h["dev_f1"] for h in evals], "o-", color="tab:red",
                 label="dev F1 (macro)")
        for name in evals[-1].get("dev_datasets", {}):
            ax2.plot([h["step"] for h in evals], [h["dev_datasets"][name] for h in evals], "--", alpha=0.5,
                     label=f"dev F1 {name}")
    ax2.set_ylabel("dev F1")
    ax2.legend(loc="lower right", fontsize=7)
    ax1.set_title("vaner training")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train(config: TrainConfig, *, extra_sentences: Sequence[Sentence] = (), progress: ProgressCallback | None = None,
          resume: bool = True, model: VanerTagger | None = None) -> TrainResult:
    """Train (or resume) a tagger; returns where the best model is and its dev metrics."""
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    data = load_training_data(config, extra_sentences)
    _seed_everything(config.seed)
    ckpt = run_dir / CHECKPOINT_DIR
    state = None
    if resume and (ckpt / STATE_FILE).exists():
        log.info("resuming from %s", ckpt)
        model = VanerTagger.load(ckpt, device=config.device, trainable=True)
        state = torch.load(ckpt / STATE_FILE, weights_only=False)
    elif model is None:
        model = VanerTagger.create(config.model, device=config.device, seed=config.seed)
    model.train()

    steps_per_epoch = steps_per_epoch_for(config, data)
    total_steps = steps_per_epoch * config.epochs
    trainable = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    optimizer = torch.optim.AdamW([
        {"params": trainable, "lr": config.lr, "weight_decay": config.weight_decay},
        {"params": list(model.head.parameters()), "lr": config.head_lr, "weight_decay": 0.0},
    ])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(total_steps, int(config.warmup_ratio * total_steps), config.lr_schedule))
    history: list[dict] = []
    start_epoch, start_step, global_step, best_f1 = 0, 0, 0, -1.0
    tokens_seen, train_seconds, eval_seconds = 0, 0.0, 0.0
    dataset_seen, sentences_seen, last_eval_at, evals_since_best, stopped = 0, 0, 0, 0, False
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, start_step = state["epoch"], state["step_in_epoch"]
        global_step, best_f1 = state["global_step"], state["best_f1"]
        history = state["history"]
        tokens_seen, train_seconds = state.get("tokens_seen", 0), state.get("train_seconds", 0.0)
        eval_seconds = state.get("eval_seconds", 0.0)
        dataset_seen, sentences_seen = state.get("dataset_sentences", 0), state.get("sentences", 0)
        last_eval_at, evals_since_best = state.get("last_eval_at", 0), state.get("evals_since_best", 0)
        stopped = state.get("stopped", False)
        torch.set_rng_state(state["torch_rng"])

    meta = {"train_config": config.to_dict(),
            "sources": {n: len(s) for n, s in zip(data.source_names, data.sources, strict=True)}}
    if data.extra:
        meta["sources"]["dbr (extra)"] = len(data.extra)
    tracker = ProgressTracker("train", total=total_steps, callback=progress, done=global_step)

    def save_checkpoint(epoch: int, step_in_epoch: int) -> None:
        tmp = run_dir / (CHECKPOINT_DIR + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        model.save(tmp, extra=meta)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
                    "step_in_epoch": step_in_epoch, "global_step": global_step, "best_f1": best_f1,
                    "history": history, "torch_rng": torch.get_rng_state(), "tokens_seen": tokens_seen,
                    "train_seconds": train_seconds, "eval_seconds": eval_seconds, "dataset_sentences": dataset_seen,
                    "sentences": sentences_seen, "last_eval_at": last_eval_at, "evals_since_best": evals_since_best,
                    "stopped": stopped}, tmp / STATE_FILE)
        _atomic_replace(tmp, ckpt)

    def dev_round(epoch: float) -> bool:
        """Evaluate on dev and keep the best model; True when ``patience`` has run out."""
        nonlocal best_f1, eval_seconds, last_eval_at, evals_since_best
        t0 = time.perf_counter()
        dev = evaluate_dev(model, data.dev)
        model.train()
        eval_seconds += time.perf_counter() - t0
        last_eval_at = dataset_seen
        history.append({"step": global_step, "epoch": epoch, "dev_f1": dev["f1"],
                        "dev_datasets": {k: v["f1"] for k, v in dev["datasets"].items()},
                        "dataset_sentences": dataset_seen, "sentences": sentences_seen,
                        "train_seconds": round(train_seconds, 2)})
        log.info("epoch %s dev macro F1 %.2f %s", epoch, dev["f1"], {k: v["f1"] for k, v in dev["datasets"].items()})
        if dev["f1"] > best_f1:
            best_f1, evals_since_best = dev["f1"], 0
            tmp = run_dir / (BEST_DIR + ".tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            model.save(tmp, extra={**meta, "dev_metrics": dev, "step": global_step,
                                   "dataset_sentences": dataset_seen})
            _atomic_replace(tmp, run_dir / BEST_DIR)
        else:
            evals_since_best += 1
        if config.patience is not None and evals_since_best >= config.patience:
            log.info("dev F1 has not improved for %d evaluations: stopping", evals_since_best)
            return True
        return False

    def write_history() -> None:
        (run_dir / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        plot_learning_curve(history, run_dir / "learning_curve.png")

    for epoch in range(start_epoch, config.epochs):
        if stopped:
            break
        batches, dataset_counts = epoch_schedule(model, data, config, epoch, steps_per_epoch)
        first = start_step if epoch == start_epoch else 0
        for step_in_epoch in range(first, steps_per_epoch):
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for micro in range(config.grad_accum):
                idx = step_in_epoch * config.grad_accum + micro
                if idx >= len(batches):
                    break
                batch = model.collate(batches[idx])
                loss = model.loss(batch) / config.grad_accum
                loss.backward()
                loss_sum += float(loss.detach())
                tokens_seen += int(batch["attention_mask"].sum())
                dataset_seen += dataset_counts[idx]
                sentences_seen += len(batches[idx])
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
            optimizer.step()
            scheduler.step()
            global_step += 1
            train_seconds += time.perf_counter() - t0
            if global_step % 10 == 0 or global_step == 1:
                history.append({"step": global_step, "epoch": epoch, "loss": round(loss_sum, 5),
                                "lr": scheduler.get_last_lr()[0]})
            tracker.advance(1, f"epoch {epoch + 1}/{config.epochs} loss {loss_sum:.4f} "
                               f"{tokens_seen / max(train_seconds, 1e-9):.0f} tok/s")
            last = epoch == config.epochs - 1 and step_in_epoch == steps_per_epoch - 1
            if config.eval_every and (dataset_seen - last_eval_at >= config.eval_every or last):
                stopped = dev_round(round(epoch + (step_in_epoch + 1) / steps_per_epoch, 4))
                save_checkpoint(epoch, step_in_epoch + 1)
                write_history()
                if stopped:
                    break
            elif config.checkpoint_every and global_step % config.checkpoint_every == 0:
                save_checkpoint(epoch, step_in_epoch + 1)
        if stopped:
            break
        if not config.eval_every:
            stopped = dev_round(epoch + 1)
        save_checkpoint(epoch + 1, 0)
        write_history()
    tracker.finish("done")
    best_meta = json.loads((run_dir / BEST_DIR / "tagger_config.json").read_text())
    return TrainResult(run_dir, run_dir / BEST_DIR, best_meta.get("dev_metrics", {}), history,
                       tokens_seen / max(train_seconds, 1e-9), global_step, dataset_seen, sentences_seen,
                       train_seconds, eval_seconds, stopped)


def command_line() -> str:
    import shlex
    import sys

    return " ".join(shlex.quote(a) for a in [os.path.basename(sys.argv[0]), *sys.argv[1:]])
