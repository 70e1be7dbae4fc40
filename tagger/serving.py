"""The tagger's serving core, free of gRPC: which model serves, how requests reach it, how a new
version replaces it, and how a retrain runs beside it. ``services/tagger_servicer.py`` is a thin
gRPC face over :class:`TaggerCore`.

Why these choices:

- **Same path as the CLI.** A model is loaded by :func:`tagger.extract.load_for_inference` and
  run by :class:`tagger.extract.Extractor`, exactly as ``vaner extract`` does, and results are the
  :mod:`tagger.formats` documents the CLI writes; so the service and the CLI give the same entities
  from the same (merged) weights.
- **Hot swap by reference.** A request takes the current ``_Serving`` (model record + its own
  micro-batcher) once, at its start, and finishes on it. ``load_model`` builds the new one
  completely before publishing it, then lets the old batcher drain its queue and stop. So a
  version switch drops nothing and no request ever mixes two models; for a moment both models are
  in memory, which is the price of never pausing.
- **Micro-batching.** Clients send small requests concurrently; running each alone wastes the
  matrix kernels and makes torch threads fight over the cores. One worker thread per model takes
  whatever is queued (up to ``batch_size`` documents, waiting at most ``max_wait_ms`` for more)
  and makes one extraction call, which is what lets the gRPC path keep up with the in-process
  path under concurrency.
- **Retrain runs beside serving.** The job (injected: the orchestration lives in
  ``retrieval/retrain.py``, above this package) runs in its own thread; its progress is iterated
  by the caller, and a disconnecting caller does not kill it. On promotion the core switches to
  the new version itself.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tagger.formats import Document
from tagger.registry import ModelRecord, ModelRegistry, resolve_model
from vaner.categories import Category
from vaner.errors import AlreadyRunning, FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable, VanerError
from vaner.progress import ProgressCallback, ProgressEvent
from vaner.settings import Settings
from vaner.streams import ThreadStream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_documents: int = 512
    max_text_chars: int = 1_000_000

    def check(self, documents: Sequence[Document]) -> None:
        if not documents:
            raise InvalidArgument("no documents to extract from")
        if len(documents) > self.max_documents:
            raise ResourceExhausted(f"{len(documents)} documents in one call; the limit is {self.max_documents} "
                                    "(split the batch or use ExtractStream)")
        for i, doc in enumerate(documents):
            if not isinstance(doc.text, str) or not doc.text.strip():
                raise InvalidArgument(f"document {i} ({doc.id!r}) has an empty text")
            if len(doc.text) > self.max_text_chars:
                raise ResourceExhausted(f"document {i} ({doc.id!r}) has {len(doc.text)} characters; "
                                        f"the limit is {self.max_text_chars}")
            if "\x00" in doc.text:
                raise InvalidArgument(f"document {i} ({doc.id!r}) contains a NUL character")


# (documents, categories) -> the same documents with their entities, in order.
ExtractFn = Callable[[list[Document], list[Category]], list[Document]]
# (artifact folder, device, batch size) -> an ExtractFn over the loaded model.
BackendFactory = Callable[[Path, str, int], ExtractFn]
# (retrain request, progress) -> an outcome with ``model`` (a ModelRecord) and ``promoted``.
RetrainFn = Callable[[Any, ProgressCallback], Any]


def extractor_backend(artifact: str | Path, device: str, batch_size: int, threads: int = 0) -> ExtractFn:
    """The real back end: the CLI's loader and extractor."""
    from tagger.extract import Extractor, load_for_inference

    extractor = Extractor(load_for_inference(artifact, device=device, threads=threads), batch_size=batch_size,
                          model_id=Path(artifact).name)
    return lambda documents, categories: extractor.extract(documents, categories)


@dataclass
class _Job:
    documents: list[Document]
    categories: tuple[Category, ...]
    future: Future


class MicroBatcher:
    """Coalesces concurrent requests for one model into batched extraction calls (one worker)."""

    def __init__(self, fn: ExtractFn, max_documents: int = 32, max_wait_ms: float = 2.0, name: str = "model"):
        self.fn = fn
        self.max_documents = max_documents
        self.max_wait = max_wait_ms / 1000.0
        self._q: queue.Queue[_Job | None] = queue.Queue()
        self._stopped = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def submit(self, documents: list[Document], categories: Sequence[Category]) -> Future:
        fut: Future = Future()
        with self._lock:
            if self._stopped:
                raise Unavailable("the model is being replaced; retry")
            self._q.put(_Job(documents, tuple(categories), fut))
        return fut

    def close(self, wait: bool = True) -> None:
        """Stop accepting; finish everything already queued (the old model's in-flight work)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._q.put(None)
        if wait:
            self._thread.join()

    def _loop(self) -> None:
        pending: list[_Job] = []
        closing = False
        while not (closing and not pending):
            if not pending:
                job = self._q.get()
                if job is None:
                    closing = True
                    continue
                pending.append(job)
            deadline = time.monotonic() + self.max_wait
            size = sum(len(j.documents) for j in pending)
            while size < self.max_documents and not closing:
                try:
                    job = self._q.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if job is None:
                    closing = True
                    break
                pending.append(job)
                size += len(job.documents)
            # One call per category set: requests asking for other types wait for the next round.
            key = pending[0].categories
            group = [j for j in pending if j.categories == key]
            pending = [j for j in pending if j.categories != key]
            self._run(group, list(key))

    def _run(self, group: list[_Job], categories: list[Category]) -> None:
        docs = [d for j in group for d in j.documents]
        try:
            results = self.fn(docs, categories)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller(s)
            if len(group) == 1:
                group[0].future.set_exception(exc)
                return
            # One caller's document must not fail the others' requests: retry each alone.
            for j in group:
                self._run([j], categories)
            return
        i = 0
        for j in group:
            n = len(j.documents)
            j.future.set_result(results[i: i + n])
            i += n


@dataclass(frozen=True)
class RetrainEvent:
    """Either a progress event or the final outcome (``model`` set, with the gate's verdict:
    ``reason`` and ``gate``, the retrain's gate report, which has ``to_dict()``)."""

    progress: ProgressEvent | None = None
    model: ModelRecord | None = None
    promoted: bool = False
    reason: str = ""
    gate: Any = None


@dataclass
class _Serving:
    record: ModelRecord
    batcher: MicroBatcher


class TaggerCore:
    """Holds the serving model; thread-safe for any number of concurrent callers."""

    def __init__(self, settings: Settings, *, model_ref: str = "latest", device: str = "cpu", batch_size: int = 32,
                 threads: int = 0, limits: Limits | None = None, max_wait_ms: float = 2.0,
                 backend_factory: BackendFactory | None = None, retrain_fn: RetrainFn | None = None,
                 registry: ModelRegistry | None = None):
        self.settings = settings
        self.model_ref = model_ref
        self.device = device
        self.batch_size = batch_size
        self.limits = limits or Limits()
        self.max_wait_ms = max_wait_ms
        self.backend_factory: BackendFactory = backend_factory or (
            lambda path, dev, batch: extractor_backend(path, dev, batch, threads))
        self.retrain_fn = retrain_fn
        self._registry = registry
        self._serving: _Serving | None = None
        self._swap_lock = threading.Lock()
        self._retrain_lock = threading.Lock()
        self.started_at = time.time()

    # ---- model lifecycle ----------------------------------------------------------------------
    @property
    def registry(self) -> ModelRegistry:
        if self._registry is None:
            self._registry = ModelRegistry(self.settings)
        return self._registry

    def start(self) -> ModelRecord:
        """Load the configured model; only the server's own config may name a folder."""
        return self.load_model(self.model_ref, allow_path=True)

    @property
    def ready(self) -> bool:
        return self._serving is not None

    def load_model(self, ref: str, allow_path: bool = False) -> ModelRecord:
        """Switch to ``ref``; requests already accepted finish on the previous model."""
        with self._swap_lock:  # one load at a time; serving continues meanwhile
            record = resolve_model(ref, lambda: self.registry, allow_path=allow_path)
            current = self._serving
            if current is not None and current.record.id == record.id \
                    and current.record.artifact_path == record.artifact_path:
                self._serving = _Serving(record, current.batcher)  # refresh the 'latest' flag only
                return record
            log.info("loading model %s from %s", record.id, record.artifact_path)
            fn = self.backend_factory(Path(record.artifact_path), self.device, self.batch_size)
            batcher = MicroBatcher(fn, max_documents=self.batch_size, max_wait_ms=self.max_wait_ms, name=record.id)
            self._serving, old = _Serving(record, batcher), current
        if old is not None:
            old.batcher.close(wait=True)
            log.info("model %s replaced by %s; its in-flight requests finished", old.record.id, record.id)
        return record

    def model_info(self) -> ModelRecord:
        serving = self._serving
        if serving is None:
            raise Unavailable("no model loaded yet")
        try:
            latest = serving.record.registered and self.registry.resolve("latest").id == serving.record.id
        except VanerError:
            latest = serving.record.latest
        return dataclasses.replace(serving.record, latest=latest)

    def close(self) -> None:
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.batcher.close(wait=True)

    # ---- extraction ---------------------------------------------------------------------------
    def extract(self, documents: Sequence[Document], categories: Sequence[Category] | None = None,
                timeout: float | None = None) -> tuple[list[Document], str]:
        """The documents with their entities, and the id of the model version that found them."""
        docs = list(documents)
        self.limits.check(docs)
        cats = list(dict.fromkeys(categories)) if categories else list(Category)
        for _ in range(3):
            serving = self._serving
            if serving is None:
                raise Unavailable("the tagger has no model loaded yet")
            try:
                fut = serving.batcher.submit(docs, cats)
            except Unavailable:
                time.sleep(0.01)  # a swap closed this batcher between our read and submit
                continue
            return fut.result(timeout=timeout), serving.record.id
        raise Unavailable("the model is being replaced; retry")

    # ---- retraining ---------------------------------------------------------------------------
    def retrain(self, request: Any) -> Iterator[RetrainEvent]:
        """Start one retrain now; iterate for its progress, then the outcome. A second is refused."""
        if self.retrain_fn is None:
            raise FailedPrecondition("retraining is not configured in this tagger")
        if not self._retrain_lock.acquire(blocking=False):
            raise AlreadyRunning("a retrain is already running in this tagger; wait for it to finish")

        def job(emit: Callable[[RetrainEvent], None]) -> RetrainEvent:
            try:
                return self._run_retrain(request, lambda ev: emit(RetrainEvent(progress=ev)))
            finally:
                self._retrain_lock.release()

        stream = ThreadStream(job, name="retrain")

        def events() -> Iterator[RetrainEvent]:
            yield from stream
            yield stream.result

        return events()

    def _run_retrain(self, request: Any, progress: ProgressCallback) -> RetrainEvent:
        assert self.retrain_fn is not None
        outcome = self.retrain_fn(request, progress)
        record, promoted = outcome.model, bool(outcome.promoted)
        if promoted:
            progress(ProgressEvent("load", 0, 1, 0.0, None, f"switching to {record.id}"))
            record = self.load_model(record.id)
        return RetrainEvent(model=record, promoted=promoted, reason=str(getattr(outcome, "reason", "") or ""),
                            gate=getattr(outcome, "gate", None))
