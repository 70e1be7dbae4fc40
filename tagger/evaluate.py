"""Strict entity-level evaluation of a tagger on labelled sentences (conlleval semantics).

Each sentence is asked with ITS dataset's instruction (or the dataset-free one when it has none),
as in the paper's per-dataset test figures; a multi-type model tags every category in that one
pass and the sentence's own category is read from it (``VanerTagger.fold``). Sentences are predicted in chunks so that long
evaluations report progress with an ETA, and each chunk is length-sorted by ``predict_proba``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

from tagger.metrics import entity_prf
from tagger.model import VanerTagger, WordQuery
from vaner.corpus import Sentence
from vaner.errors import InvalidArgument
from vaner.progress import ProgressCallback, ProgressTracker


def evaluate(tagger: VanerTagger, sentences: Sequence[Sentence], batch_size: int = 32,
             progress: ProgressCallback | None = None, chunk: int = 256) -> dict:
    """Returns precision/recall/f1 (0-100), support, tp/fp/fn, sentence and timing counts, and a
    ``by_dataset`` breakdown when the sentences come from more than one dataset."""
    if not sentences:
        raise InvalidArgument("nothing to evaluate: no sentences")
    tracker = ProgressTracker("evaluate", total=len(sentences), callback=progress)
    pred: list[list[str]] = []
    t0 = time.perf_counter()
    for i in range(0, len(sentences), chunk):
        part = sentences[i: i + chunk]
        pred.extend(tagger.predict_tags([WordQuery(s.words, s.category, s.dataset) for s in part], batch_size))
        tracker.advance(len(part))
    seconds = time.perf_counter() - t0
    if progress:
        tracker.finish()
    gold = [list(s.tags) for s in sentences]
    result = dict(entity_prf(gold, pred))
    result.update(sentences=len(sentences), words=sum(len(s.words) for s in sentences),
                  seconds=round(seconds, 3), sentences_per_s=round(len(sentences) / max(seconds, 1e-9), 2))
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(sentences):
        groups[s.dataset or f"<{s.category.value}>"].append(i)
    if len(groups) > 1:
        result["by_dataset"] = {name: entity_prf([gold[i] for i in idx], [pred[i] for i in idx])
                                for name, idx in groups.items()}
    return result
