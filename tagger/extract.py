"""Entity extraction from documents: the core that ``vaner extract`` and the gRPC Extract calls share.

Pipeline per document: split each passage into sentences, tokenise with offsets
(:mod:`tagger.text`), ask the model once per (sentence, requested type) with the dataset-free
instruction (unseen text, VANER eq. 6), decode O/B/I to word spans with conlleval semantics (an
I after O starts an entity), score each span, add the mentions the document-level consistency rules
find (:mod:`tagger.consistency`: abbreviations, repeated names), map word spans to character
offsets, then resolve overlaps between types. The queries stay one per (sentence, type) for every model; which of them
share a forward pass is the model's business (:meth:`VanerTagger.window_groups`): one pass each
for a single-type model, one pass per sentence for all its types for a multi-type model.

Why these choices:
- score = mean probability of the predicted tag over the span's words: cheap, in [0, 1], and it
  drops when any word of the span is uncertain, which is what users filter on.
- overlap policy ``best`` (default): where spans of different types overlap, keep the higher
  score (ties: longer span, then earlier start, then category order), so each character gets at
  most one type, as PubTator-style consumers expect. ``all`` keeps every span (a gene name
  that is also a disease name stays listed twice), for users who resolve ambiguity themselves.
- one :class:`Extractor` per loaded model, used by ``vaner extract`` and by the tagger service
  (tagger/serving.py) alike, both loading through :func:`load_for_inference`, so the CLI and the
  service serve the same weights and give the same entities. A lock serialises the forward pass
  (torch already uses every core for one batch); switching models is the serving core's job.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagger.consistency import Consistency, WordSpan, make_consistent
from tagger.decoding import DECODINGS, decode_spans
from tagger.encoding import EncodedInput
from tagger.formats import Document, DocumentEntities, Entity, LinkFn, document_sentences, link_documents
from tagger.model import VanerTagger, WordQuery
from tagger.text import TextSentence
from vaner.cancel import StopCheck, check_stop
from vaner.categories import Category
from vaner.errors import InvalidArgument
from vaner.progress import ProgressCallback, ProgressTracker

log = logging.getLogger(__name__)

OVERLAP_POLICIES = ("best", "all")


@dataclass(frozen=True)
class ExtractionStats:
    documents: int
    empty_documents: int
    sentences: int
    queries: int
    words: int
    entities: int


def merge_for_inference(tagger: VanerTagger) -> VanerTagger:
    """Fold the LoRA weights into the base weights, in place, for a tagger that will not train again.

    Why: the PEFT wrappers run two extra small matmuls per projection; merging them measured ~39 %
    less CPU time per token on the 2-core CPU (BENCHMARKS.md) with the same outputs up to
    float rounding. Not for 4-bit bases (merging would dequantise) nor for taggers still training.
    """
    if getattr(tagger.config, "quantize_4bit", False):
        return tagger
    if hasattr(tagger.backbone, "merge_and_unload"):
        tagger.backbone = tagger.backbone.merge_and_unload()
    tagger.eval()
    return tagger


def load_for_inference(artifact: str | Path, device: str = "auto", threads: int = 0) -> VanerTagger:
    """The one way a saved tagger is loaded to serve: weights merged, eval mode, and ``threads``
    torch CPU threads when set (0 = torch's default). Why one function: the CLI and the gRPC
    service once loaded differently and the service ran the slower unmerged path."""
    if threads:
        import torch

        # On a shared or oversubscribed CPU, fewer intra-op threads avoid OpenMP spin-wait collapse.
        torch.set_num_threads(threads)
    tagger = merge_for_inference(VanerTagger.load(artifact, device=device))
    tagger.eval()
    return tagger


def resolve_overlaps(entities: Sequence[Entity], policy: str = "best") -> list[Entity]:
    """Apply the overlap policy to one document's entities; output sorted by (start, end, type)."""
    if policy not in OVERLAP_POLICIES:
        raise InvalidArgument(f"unknown overlap policy {policy!r}; expected one of {', '.join(OVERLAP_POLICIES)}")
    if policy == "all":
        kept = list(entities)
    else:
        order = {c.value: i for i, c in enumerate(Category)}
        ranked = sorted(entities, key=lambda e: (-e.score, -(e.end - e.start), e.start, order.get(e.type, 99)))
        kept = []
        for e in ranked:
            if all(e.end <= k.start or k.end <= e.start for k in kept):
                kept.append(e)
    return sorted(kept, key=lambda e: (e.start, e.end, e.type))


@dataclass(frozen=True)
class ExtractionPlan:
    """A call split into model queries, before any model work: what a server needs to cap a call's
    cost (``words``) and to schedule its queries fairly beside other calls' (tagger/serving.py)."""

    documents: list[Document]
    sentences: list[list[TextSentence]]  # per document
    queries: list[WordQuery]  # one per (sentence, category), a sentence's categories consecutive
    index: list[tuple[int, int, Category]]  # (document, sentence, category) of each query
    empty: int  # documents without a sentence
    categories: tuple[Category, ...] = ()  # asked for each sentence, in query order

    @property
    def words(self) -> int:
        """Words of the input (each sentence counted once, whatever the number of categories)."""
        return sum(len(s.tokens) for sents in self.sentences for s in sents)


class Extractor:
    def __init__(self, tagger: VanerTagger, batch_size: int = 32, overlap: str = "best",
                 link: LinkFn | None = None, model_id: str | None = None, chunk_queries: int = 512,
                 decoding: str = "viterbi", consistency: Consistency = Consistency()):
        if batch_size < 1:
            raise InvalidArgument("batch_size must be >= 1")
        self.consistency = consistency
        if decoding not in DECODINGS:
            raise InvalidArgument(f"unknown decoding {decoding!r}; expected one of {', '.join(DECODINGS)}")
        self.decoding = decoding
        resolve_overlaps([], overlap)  # validates the name
        self.batch_size = batch_size
        self.overlap = overlap
        self.link = link
        self.chunk_queries = max(chunk_queries, 1)
        self.tagger = tagger
        self.model_id = model_id
        self._lock = threading.Lock()
        self.last_stats: ExtractionStats | None = None

    def plan(self, documents: Sequence[Document], categories: Sequence[Category | str] | None = None,
             dataset: str | None = None, should_stop: StopCheck | None = None) -> ExtractionPlan:
        """Split the documents into sentences and one query per (sentence, category); no model work.
        ``should_stop`` is looked at between documents and while a long one is split (a server's
        caller may leave meanwhile, and a huge document takes seconds to split)."""
        cats = Category.parse_list(list(categories) if categories is not None else None)
        dataset = dataset.strip() if dataset and dataset.strip() else None
        docs = list(documents)
        per_doc_sents = []
        empty = 0
        for d in docs:
            check_stop(should_stop, "extraction")
            sents = document_sentences(d, should_stop) if d.text.strip() else []
            if not sents:
                empty += 1
            per_doc_sents.append(sents)
        if empty:
            log.info("skipping %d empty document(s) of %d", empty, len(docs))
        queries: list[WordQuery] = []
        index: list[tuple[int, int, Category]] = []
        for di, sents in enumerate(per_doc_sents):
            for si, s in enumerate(sents):
                words = s.words
                for c in cats:
                    queries.append(WordQuery(words, c, dataset))
                    index.append((di, si, c))
        return ExtractionPlan(docs, per_doc_sents, queries, index, empty, tuple(cats))

    def window_proba(self, windows: Sequence[EncodedInput]) -> list[np.ndarray]:
        """One forward pass over model windows (:meth:`VanerTagger.query_windows`), serialised
        with every other use of this model."""
        with self._lock:
            return self.tagger.window_proba(windows, batch_size=self.batch_size)

    def extract(self, documents: Sequence[Document], categories: Sequence[Category | str] | None = None,
                dataset: str | None = None, *, overlap: str | None = None, link: LinkFn | None = None,
                progress: ProgressCallback | None = None) -> list[DocumentEntities]:
        """One output document per input document, in order (empty ones get no entities).

        ``dataset`` switches to the dataset-specific instruction (to mimic that corpus's
        annotation style); by default unseen text gets the dataset-free one.
        """
        resolve_overlaps([], overlap or self.overlap)
        plan = self.plan(documents, categories, dataset)
        queries = plan.queries
        probs: list[np.ndarray] = []
        tracker = ProgressTracker("extract", total=len(queries), callback=progress)
        # whole sentences per chunk: a multi-type model answers a sentence's types in one pass
        per_sentence = max(len(plan.categories), 1)
        step = max(self.chunk_queries // per_sentence, 1) * per_sentence
        for i in range(0, len(queries), step):
            chunk = queries[i: i + step]
            with self._lock:
                probs.extend(self.tagger.predict_proba(chunk, batch_size=self.batch_size))
            tracker.advance(len(chunk))
        if progress:
            tracker.finish()
        return self.assemble(plan, probs, overlap=overlap, link=link)

    def assemble(self, plan: ExtractionPlan, probs: Sequence[np.ndarray], *, overlap: str | None = None,
                 link: LinkFn | None = None, should_stop: StopCheck | None = None) -> list[DocumentEntities]:
        """Decode each query's probabilities into spans, apply the document-level consistency rules
        (:mod:`tagger.consistency`), resolve overlaps, link: the documents out.
        ``should_stop`` is looked at every 1,000 queries: decoding a huge document's tens of
        thousands of queries takes seconds, which a caller past its deadline must not cost."""
        policy = overlap or self.overlap
        resolve_overlaps([], policy)
        link = link if link is not None else self.link
        documents = plan.documents
        spans: list[list[WordSpan]] = [[] for _ in documents]
        for qi, ((di, si, cat), p) in enumerate(zip(plan.index, probs, strict=True)):
            if qi % 1000 == 999:
                check_stop(should_stop, "extraction")
            spans[di].extend(WordSpan(si, ws, we, cat.value, score)
                             for ws, we, score in decode_spans(p, self.decoding))
        found: list[list[Entity]] = []
        for di, doc_spans in enumerate(spans):
            check_stop(should_stop, "extraction")
            if self.consistency.enabled and doc_spans:
                doc_spans = make_consistent([s.words for s in plan.sentences[di]], doc_spans, self.consistency)
            text = documents[di].text
            ents = []
            for w in doc_spans:
                tokens = plan.sentences[di][w.sentence].tokens
                start, end = tokens[w.start].start, tokens[w.end - 1].end
                ents.append(Entity(start, end, text[start:end], w.category, w.score))
            found.append(ents)

        out = []
        n_entities = 0
        for d, ents in zip(documents, found, strict=True):
            kept = resolve_overlaps(ents, policy)
            n_entities += len(kept)
            out.append(dataclasses.replace(d, entities=tuple(kept)))
        if link is not None and n_entities:
            out = link_documents(out, link)
        self.last_stats = ExtractionStats(len(documents), plan.empty, sum(len(s) for s in plan.sentences),
                                          len(plan.queries), sum(len(q.words) for q in plan.queries), n_entities)
        return out


__all__ = ["ExtractionPlan", "Extractor", "ExtractionStats", "LinkFn", "OVERLAP_POLICIES",
           "load_for_inference",
           "merge_for_inference", "resolve_overlaps"]
