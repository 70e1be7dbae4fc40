"""Retrieval gRPC servicer: thin over retrieval/ (KServe style).

Each method validates the request, converts protos to domain values, calls the core, and converts
back. Bad input raises :class:`VanerError` subclasses; the shared interceptor maps them to status
codes, so this module never sets a code itself. Retrieve stops between batches once its caller has
gone or its deadline has passed (services/calls.py).

BuildDbrSamples runs the build in a worker thread and streams its progress events; if the client
goes away the build still finishes, because the result is a cached artifact the next call reuses.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from retrieval.dbr import DbrBuilder, DbrParams
from retrieval.phrases import PhraseMiner
from retrieval.retrieve import Retriever
from services.calls import call_ended
from services.convert import category_filter, hit_to_proto
from vaner import __version__
from vaner.errors import InvalidArgument, ResourceExhausted
from vaner.progress_proto import progress_to_proto
from vaner.settings import Settings
from vaner.streams import ThreadStream
from vaner.v1 import kb_pb2, retrieval_pb2, retrieval_pb2_grpc

log = logging.getLogger(__name__)

MAX_SENTENCES = 20_000
MAX_PHRASES = 20_000
MAX_K = 100


class RetrievalServicer(retrieval_pb2_grpc.RetrievalServicer):
    def __init__(self, settings: Settings, kb: Any = None, *, default_data_dir: str | None = None):
        self.settings = settings
        self._kb = kb
        self._kb_lock = threading.Lock()
        self.default_data_dir = default_data_dir

    @property
    def kb(self) -> Any:
        with self._kb_lock:
            if self._kb is None:
                from kb_ingest.kb import KnowledgeBase

                self._kb = KnowledgeBase(self.settings)
            return self._kb

    def MinePhrases(self, request, context):
        sentences = [list(s.tokens) for s in request.sentences]
        if len(sentences) > MAX_SENTENCES:
            raise ResourceExhausted(f"{len(sentences)} sentences in one request; the limit is {MAX_SENTENCES}")
        # corpus statistics come from the request itself: send a whole document set for best phrases
        miner = PhraseMiner().fit(sentences)
        return retrieval_pb2.MinePhrasesResponse(
            results=[retrieval_pb2.MinedPhrases(phrases=[p.text for p in miner.mine(words)]) for words in sentences])

    def Retrieve(self, request, context):
        phrases = list(request.phrases)
        if len(phrases) > MAX_PHRASES:
            raise ResourceExhausted(f"{len(phrases)} phrases in one request; the limit is {MAX_PHRASES}")
        k = request.k or 5
        if not 1 <= k <= MAX_K:
            raise InvalidArgument(f"k must be between 1 and {MAX_K}, got {request.k}")
        if not phrases:
            return retrieval_pb2.RetrieveResponse()
        retriever = Retriever(self.kb, request.snapshot or "latest", k=k)
        results = retriever.retrieve(phrases, category_filter(request.categories), should_stop=call_ended(context))
        return retrieval_pb2.RetrieveResponse(
            results=[kb_pb2.SearchHits(hits=[hit_to_proto(h) for h in hits]) for hits in results])

    def BuildDbrSamples(self, request, context) -> Iterator[retrieval_pb2.BuildDbrEvent]:
        datasets = [d for d in request.datasets if d.strip()]
        if not datasets:
            raise InvalidArgument("BuildDbrSamples needs at least one dataset name")
        mode = {0: "retrieved", 1: "retrieved", 2: "random"}.get(request.mode)
        if mode is None:
            raise InvalidArgument(f"unknown DBR mode {request.mode}")
        params = DbrParams(mode=mode, seed=request.seed, max_positive=request.max_positive or 10,
                           max_negative=request.max_negative or 5, top_k=request.top_k or 5,
                           corpus_agreement=round(request.corpus_agreement, 6),  # proto float32: 0.3 stays 0.3
                           max_uses=request.max_uses)
        data_dir = request.data_dir or self.default_data_dir
        stream = ThreadStream(
            lambda emit: DbrBuilder(self.settings, self.kb).build(
                datasets, params, snapshot=request.snapshot or "latest", data_dir=data_dir, progress=emit),
            name="dbr-build")
        for ev in stream:
            if context is None or context.is_active():
                yield retrieval_pb2.BuildDbrEvent(progress=progress_to_proto(ev))
        s = stream.result
        yield retrieval_pb2.BuildDbrEvent(done=retrieval_pb2.DbrSet(
            id=s.id, path=str(Path(s.path)), sentences=s.sentences, snapshot=s.snapshot,
            params_json=json.dumps(s.params, sort_keys=True)))

    def Health(self, request, context):
        details = {"dbr_dir": str(self.settings.dbr_dir)}
        ok = True
        try:
            details["kb_snapshot"] = str(self.kb.get_snapshot("latest").id)
        except Exception as exc:  # health reports, it does not fail
            ok = False
            details["kb"] = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
        return kb_pb2.HealthResponse(ok=ok, service="retrieval", version=__version__, details=details)
