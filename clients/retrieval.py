"""Client of the Retrieval service."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from clients.base import BaseClient
from clients.types import Concept, DbrSet, Health, Progress
from vaner.categories import Category
from vaner.errors import InvalidArgument
from vaner.progress_proto import progress_from_proto
from vaner.v1 import kb_pb2, retrieval_pb2, retrieval_pb2_grpc


class RetrievalClient(BaseClient):
    service = "retrieval"

    def __init__(self, address: str, options=None, **kwargs):  # noqa: ANN001
        super().__init__(address, options, **kwargs)
        self.stub = retrieval_pb2_grpc.RetrievalStub(self.channel)

    def mine_phrases(self, sentences: Sequence[Sequence[str]], timeout: float | None = None) -> list[list[str]]:
        req = retrieval_pb2.MinePhrasesRequest(sentences=[retrieval_pb2.TokenizedSentence(tokens=list(s))
                                                          for s in sentences])
        resp = self._unary(self.stub.MinePhrases, req, "MinePhrases", timeout)
        return [list(r.phrases) for r in resp.results]

    def retrieve(self, phrases: Sequence[str], snapshot: str = "latest", k: int = 5,
                 categories: Sequence[str | Category] | None = None, timeout: float | None = None) -> list[list[Concept]]:
        req = retrieval_pb2.RetrieveRequest(phrases=list(phrases), snapshot=snapshot, k=k,
                                            categories=[Category.parse(c).to_proto() for c in categories or ()])
        resp = self._unary(self.stub.Retrieve, req, "Retrieve", timeout)
        return [[Concept.from_proto(h) for h in r.hits] for r in resp.results]

    def build_dbr_events(self, datasets: Sequence[str], snapshot: str = "latest", mode: str = "retrieved",
                         data_dir: str = "", seed: int = 0, max_positive: int = 0, max_negative: int = 0,
                         top_k: int = 0, corpus_agreement: float = 0.0, max_uses: int = 0,
                         timeout: float | None = None) -> Iterator[Progress | DbrSet]:
        modes = {"retrieved": retrieval_pb2.RETRIEVED, "random": retrieval_pb2.RANDOM}
        if mode not in modes:
            raise InvalidArgument(f"mode must be retrieved or random, not {mode!r}")
        req = retrieval_pb2.BuildDbrRequest(snapshot=snapshot, datasets=list(datasets), data_dir=data_dir,
                                            mode=modes[mode], seed=seed, max_positive=max_positive,
                                            max_negative=max_negative, top_k=top_k,
                                            corpus_agreement=corpus_agreement, max_uses=max_uses)
        for ev in self._stream(self.stub.BuildDbrSamples, req, "BuildDbrSamples", timeout):
            if ev.HasField("done"):
                yield DbrSet.from_proto(ev.done)
            elif ev.HasField("progress"):
                yield progress_from_proto(ev.progress)

    def build_dbr(self, datasets: Sequence[str], on_progress=None, **kwargs) -> DbrSet:  # noqa: ANN001, ANN003
        return self._outcome(self.build_dbr_events(datasets, **kwargs), DbrSet, "BuildDbrSamples", on_progress)

    def health(self, timeout: float | None = None) -> Health:
        return Health.from_proto(self._unary(self.stub.Health, kb_pb2.HealthRequest(), "Health", timeout))
