"""How sentences from datasets of very different sizes are mixed into epochs.

Each source (a dataset, a CoNLL file, the DBR set) is drawn with probability proportional to
``size ** temperature`` (T=1: proportional; T<1 up-weights small sets, as in multilingual MT),
without replacement inside a source until it is exhausted and reshuffled. Batches are then
length-bucketed: sentences are sorted by token length inside pools of ~50 batches, cut into
batches, and the batch order shuffled, which cuts padding while keeping batches varied.
Everything is a pure function of (seed, epoch), so a resumed run replays the same plan.
(With ``TrainConfig.dbr_budget="extra"`` the DBR set is not a mixed source: tagger/train.py adds it
on top of the dataset sentences.)
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from vaner.corpus import Sentence


def source_weights(sizes: Sequence[int], temperature: float, factors: Sequence[float] | None = None) -> list[float]:
    factors = factors or [1.0] * len(sizes)
    raw = [f * s ** temperature if s > 0 else 0.0 for s, f in zip(sizes, factors, strict=True)]
    total = sum(raw)
    return [r / total for r in raw] if total else raw


def epoch_plan(sources: Sequence[Sequence[Sentence]], n_sentences: int, temperature: float, seed: int,
               epoch: int, factors: Sequence[float] | None = None) -> list[Sentence]:
    """Draw ``n_sentences`` sentences for one epoch from the sources (``factors`` scale each
    source's probability, e.g. to keep extra corpora from crowding out the benchmark sets)."""
    return [s for _, s in epoch_plan_indexed(sources, n_sentences, temperature, seed, epoch, factors)]


def epoch_plan_indexed(sources: Sequence[Sequence[Sentence]], n_sentences: int, temperature: float, seed: int,
                       epoch: int, factors: Sequence[float] | None = None) -> list[tuple[int, Sentence]]:
    """:func:`epoch_plan` with the index of the source each sentence came from (the trainer counts
    dataset sentences apart from DBR ones)."""
    rng = random.Random(f"{seed}:{epoch}:plan")
    weights = source_weights([len(s) for s in sources], temperature, factors)
    perms: list[list[int]] = []
    cursors: list[int] = []
    for i, src in enumerate(sources):
        perm = list(range(len(src)))
        random.Random(f"{seed}:{epoch}:src{i}").shuffle(perm)
        perms.append(perm)
        cursors.append(0)
    picks = rng.choices(range(len(sources)), weights=weights, k=n_sentences) if n_sentences else []
    out: list[tuple[int, Sentence]] = []
    for si in picks:
        if cursors[si] >= len(perms[si]):
            random.Random(f"{seed}:{epoch}:src{si}:{cursors[si]}").shuffle(perms[si])
            cursors[si] = 0
        out.append((si, sources[si][perms[si][cursors[si]]]))
        cursors[si] += 1
    return out


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                            pool_batches: int = 50) -> list[list[int]]:
    """Indices grouped into batches of similar length, in a seeded random batch order."""
    rng = random.Random(f"{seed}:{epoch}:batches")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * pool_batches
    batches: list[list[int]] = []
    for p in range(0, len(order), pool):
        chunk = sorted(order[p: p + pool], key=lambda i: lengths[i])
        batches.extend(chunk[b: b + batch_size] for b in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches
