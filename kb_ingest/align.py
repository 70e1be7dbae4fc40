"""Synonym alignment, SapBERT-style, on the user's own KB (``kb-ingest align``).

SapBERT (Liu et al. 2021) fine-tunes an encoder so that all names of one concept sit close
together, with the KB's synonym sets as the only supervision. Here: every concept of a snapshot
with at least two distinct names is a synonym set; a step samples ``batch_size`` concepts and two
of their names each, and the loss is multiple-negatives ranking with in-batch negatives (each
anchor must pick its own synonym among the batch's positives; symmetric for a static model).
Two trainers, one per trainable backend:

* sentence-transformers (MiniLM, SapBERT, an earlier aligned model): the library's
  ``MultipleNegativesRankingLoss`` in a plain torch loop (no ``datasets`` dependency);
* model2vec static models: a direct contrastive fine-tune of the embedding table with torch
  (an ``EmbeddingBag`` in mean mode is exactly model2vec's encoder), so alignment keeps the
  static model's speed.

Training is bounded by steps and wall time, seeded, and single-process. The result is a new
encoder ``<base>-aligned-<n>`` under ``$VANER_HOME/encoders`` (manifest + a kb_encoders row with
the run's provenance); :meth:`KnowledgeBase.reencode` then builds a snapshot that records it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kb_ingest.encoder import Encoder, check_encoder_name, encoders_root, load_from
from kb_ingest.encoder_backends import MODEL2VEC, ONNX, SENTENCE_TRANSFORMERS
from kb_ingest.encoder_build import staging, write_manifest
from kb_ingest.filters import normalise
from vaner.errors import FailedPrecondition, InvalidArgument
from vaner.progress import ProgressCallback, ProgressTracker

log = logging.getLogger(__name__)

DEFAULT_LR = {SENTENCE_TRANSFORMERS: 2e-5, MODEL2VEC: 0.05}


@dataclass(frozen=True)
class AlignConfig:
    budget_minutes: float = field(default=10.0, metadata={"help": "wall-clock budget of the training loop"})
    max_steps: int = field(default=1000, metadata={"help": "upper bound on optimiser steps"})
    batch_size: int = field(default=64, metadata={"help": "concepts per step (in-batch negatives = this - 1)"})
    learning_rate: float | None = field(default=None, metadata={"help": "default: 2e-5 transformer, 0.05 static"})
    scale: float = field(default=20.0, metadata={"help": "similarity scale (inverse temperature) of the loss"})
    seed: int = 0
    max_concepts: int | None = field(default=None, metadata={"help": "train on a seeded sample of this many"})

    def __post_init__(self) -> None:
        if not (self.budget_minutes > 0 and math.isfinite(self.budget_minutes)):
            raise InvalidArgument(f"--budget-minutes must be > 0, got {self.budget_minutes}")
        if self.max_steps < 1:
            raise InvalidArgument(f"--max-steps must be >= 1, got {self.max_steps}")
        if self.batch_size < 2:
            raise InvalidArgument(f"--batch-size must be >= 2 (in-batch negatives), got {self.batch_size}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise InvalidArgument(f"--lr must be > 0, got {self.learning_rate}")
        if not self.scale > 0:
            raise InvalidArgument(f"scale must be > 0, got {self.scale}")
        if self.max_concepts is not None and self.max_concepts < 2:
            raise InvalidArgument(f"--max-concepts must be >= 2, got {self.max_concepts}")


@dataclass
class SynonymSets:
    """Concepts with >= 2 distinct names (case/space-insensitive), in first-seen order."""

    cuis: list[str]
    names: list[list[str]]

    def __len__(self) -> int:
        return len(self.cuis)

    @property
    def pairs_possible(self) -> int:
        return sum(len(n) * (len(n) - 1) // 2 for n in self.names)


def synonym_sets(payloads: Iterable[dict], min_names: int = 2) -> SynonymSets:
    by_cui: dict[str, dict[str, str]] = {}
    for p in payloads:
        cui, name = str(p.get("cui", "")), str(p.get("name", ""))
        key = normalise(name)
        if cui and key:
            by_cui.setdefault(cui, {}).setdefault(key, name)
    keep = [(c, list(n.values())) for c, n in by_cui.items() if len(n) >= min_names]
    return SynonymSets([c for c, _ in keep], [n for _, n in keep])


def sample_pairs(sets: SynonymSets, rng: np.random.Generator, batch: int) -> tuple[list[str], list[str]]:
    """``batch`` distinct concepts, two distinct names of each: (anchors, positives)."""
    idx = rng.choice(len(sets), size=min(batch, len(sets)), replace=False)
    anchors, positives = [], []
    for i in idx.tolist():
        names = sets.names[i]
        a, b = rng.choice(len(names), size=2, replace=False).tolist()
        anchors.append(names[a])
        positives.append(names[b])
    return anchors, positives


def synonym_margin(encode, sets: SynonymSets, pairs: int = 2000, seed: int = 0) -> dict[str, float]:  # noqa: ANN001
    """Mean cosine of synonym pairs minus that of random non-synonym pairs: the quantity alignment
    should raise (reported after every run, and what the tests assert on)."""
    rng = np.random.default_rng(seed)
    n = min(pairs, len(sets))
    anchors, positives = sample_pairs(sets, rng, n)
    va, vp = encode(anchors), encode(positives)
    syn = float(np.mean(np.sum(va * vp, axis=1)))
    shift = rng.permutation(n) if n > 1 else np.zeros(1, dtype=int)
    shift = np.where(shift == np.arange(n), (shift + 1) % n, shift)  # never a concept with itself
    non = float(np.mean(np.sum(va * vp[shift], axis=1)))
    return {"synonym_cosine": round(syn, 4), "non_synonym_cosine": round(non, 4), "margin": round(syn - non, 4),
            "pairs": n}


@dataclass
class AlignResult:
    name: str
    folder: Path
    steps: int
    seconds: float
    loss_first: float
    loss_last: float
    before: dict
    after: dict
    manifest: dict = field(default_factory=dict)


def _optimise(sets: SynonymSets, cfg: AlignConfig, opt, batch_loss: Callable, tracker: ProgressTracker,  # noqa: ANN001
              deadline: float) -> tuple[int, list[float]]:
    """The loop both trainers share, so they sample, step and stop alike: seeded pair sampling, one
    optimiser step per batch, bounded by ``max_steps`` and the wall-clock ``deadline``. A batch whose
    loss is None (the static trainer: fewer than two tokenisable pairs) still uses up a step, so a
    KB of untokenisable names cannot loop until the deadline."""
    rng = np.random.default_rng(cfg.seed)
    losses: list[float] = []
    step = 0
    while step < cfg.max_steps and time.monotonic() < deadline:
        loss = batch_loss(*sample_pairs(sets, rng, cfg.batch_size))
        step += 1
        if loss is None:
            continue
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        tracker.advance(1)
    return step, losses


def _train_static(base: Encoder, sets: SynonymSets, cfg: AlignConfig, out: Path, tracker: ProgressTracker,
                  deadline: float) -> tuple[int, list[float]]:
    import torch
    from model2vec import StaticModel

    m = StaticModel.from_pretrained(base.location, force_download=False)
    if m.weights is not None or m.token_mapping is not None:
        raise FailedPrecondition(f"encoder {base.name}: vocabulary-quantised model2vec models cannot be aligned")
    torch.manual_seed(cfg.seed)
    # sparse gradients: a step touches the rows of a few hundred tokens, not the whole vocabulary
    table = torch.nn.EmbeddingBag.from_pretrained(torch.tensor(np.asarray(m.embedding, dtype=np.float32)),
                                                  freeze=False, mode="mean", sparse=True)
    opt = torch.optim.SparseAdam(list(table.parameters()), lr=cfg.learning_rate or DEFAULT_LR[MODEL2VEC])

    def batch_loss(anchors: list[str], positives: list[str]) -> torch.Tensor | None:
        ids = m.tokenize(anchors + positives)
        ok = [i for i in range(len(anchors)) if ids[i] and ids[i + len(anchors)]]
        if len(ok) < 2:
            return None
        rows = [ids[i] for i in ok] + [ids[i + len(anchors)] for i in ok]
        flat = torch.tensor([t for r in rows for t in r], dtype=torch.long)
        offsets = torch.tensor(np.cumsum([0] + [len(r) for r in rows[:-1]]), dtype=torch.long)
        vec = torch.nn.functional.normalize(table(flat, offsets), dim=1)
        a, p = vec[:len(ok)], vec[len(ok):]
        logits = cfg.scale * a @ p.T
        target = torch.arange(len(ok))
        return (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)) / 2

    step, losses = _optimise(sets, cfg, opt, batch_loss, tracker, deadline)
    trained = StaticModel(vectors=table.weight.detach().numpy().astype(np.float32), tokenizer=m.tokenizer,
                          config=m.config, normalize=True, base_model_name=m.base_model_name, language=m.language,
                          max_length=m.max_length)
    trained.save_pretrained(str(out))
    return step, losses


def _train_sentence_transformer(base: Encoder, sets: SynonymSets, cfg: AlignConfig, out: Path,
                                tracker: ProgressTracker, deadline: float) -> tuple[int, list[float]]:
    import torch
    from sentence_transformers.sentence_transformer import losses as st_losses

    from kb_ingest.encoder_backends import load_sentence_transformer

    torch.manual_seed(cfg.seed)
    # a fresh copy: the cached encoder keeps serving searches with the base weights meanwhile
    model, _, _ = load_sentence_transformer(Path(base.location), "cpu", base.max_seq_length)
    loss_fn = st_losses.MultipleNegativesRankingLoss(model, scale=cfg.scale)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate or DEFAULT_LR[SENTENCE_TRANSFORMERS])
    model.train()
    step, losses = _optimise(sets, cfg, opt, lambda anchors, positives: loss_fn(
        [model.tokenize(anchors), model.tokenize(positives)], None), tracker, deadline)
    model.eval()
    model.save(str(out))
    return step, losses


TRAINERS = {MODEL2VEC: _train_static, SENTENCE_TRANSFORMERS: _train_sentence_transformer}


def align_encoder(base: Encoder, sets: SynonymSets, name: str, *, home: Path | str, cfg: AlignConfig,
                  snapshot_id: str = "", progress: ProgressCallback | None = None) -> AlignResult:
    """Train ``base`` on ``sets`` within the budget and store the result as encoder ``name``."""
    if base.backend == ONNX:
        raise FailedPrecondition(f"encoder {base.name} is an ONNX export and cannot be trained; align its source "
                                 "(--base all-MiniLM-L6-v2) or the static model (--base minilm-m2v)")
    trainer = TRAINERS.get(base.backend)
    if trainer is None or not base.location or not Path(base.location).is_dir():
        raise FailedPrecondition(f"encoder {base.name} ({base.backend}) has no model folder that can be trained")
    if len(sets) < 2:
        raise FailedPrecondition(f"alignment needs at least 2 concepts with two or more names; the snapshot has "
                                 f"{len(sets)}")
    check_encoder_name(name)
    if cfg.max_concepts is not None and len(sets) > cfg.max_concepts:
        keep = sorted(np.random.default_rng(cfg.seed).choice(len(sets), cfg.max_concepts, replace=False).tolist())
        sets = SynonymSets([sets.cuis[i] for i in keep], [sets.names[i] for i in keep])
    before = synonym_margin(base.encode, sets, seed=cfg.seed + 1)
    tracker = ProgressTracker("align", cfg.max_steps, progress)
    t0 = time.monotonic()
    root = encoders_root(home)
    with staging(root, name) as tmp:
        steps, losses = trainer(base, sets, cfg, tmp, tracker, t0 + cfg.budget_minutes * 60)
        seconds = time.monotonic() - t0
        tracker.finish(f"{steps} steps in {seconds:.0f} s")
        trained = load_from(name, str(tmp), home=home)  # the trained folder, loaded fresh to measure it
        after = synonym_margin(trained.encode, sets, seed=cfg.seed + 1)
        base_record = base.record()
        head = losses[: max(1, min(20, len(losses)))]
        tail = losses[-max(1, min(20, len(losses))):]
        manifest = write_manifest(
            tmp, name=name, backend=base.backend, version="1", description=f"{base.name} aligned on the synonym sets "
            f"of snapshot {snapshot_id or '?'}", pooling=base.pooling, max_seq_length=base.max_seq_length,
            base={"name": base.name, "version": base_record["version"], "sha256": base_record["sha256"]},
            alignment={"snapshot": snapshot_id, "concepts": len(sets), "pairs_possible": sets.pairs_possible,
                       "steps": steps, "seconds": round(seconds, 1), "config": asdict(cfg),
                       "learning_rate": cfg.learning_rate or DEFAULT_LR[base.backend],
                       "loss_first": round(float(np.mean(head)), 4) if losses else None,
                       "loss_last": round(float(np.mean(tail)), 4) if losses else None,
                       "margin_before": before, "margin_after": after},
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    log.info("aligned %s -> %s: margin %.3f -> %.3f in %d steps", base.name, name, before["margin"],
             after["margin"], steps)
    return AlignResult(name, root / name, steps, seconds, float(np.mean(head)) if losses else float("nan"),
                       float(np.mean(tail)) if losses else float("nan"), before, after, manifest)
