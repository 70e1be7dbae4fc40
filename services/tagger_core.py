"""The tagger service's core, free of gRPC: which model serves, how requests reach it, how a new
version replaces it, and how a retrain is run.

Why these choices:

- **Hot swap by reference.** A request takes the current ``_Serving`` (model record + its own
  micro-batcher) once, at its start, and finishes on it. ``load_model`` builds the new one
  completely before publishing it, then lets the old batcher drain its queue and stop. So a
  version switch drops nothing and no request ever mixes two models; for a moment both models are
  in memory, which is the price of never pausing.
- **Micro-batching.** Clients send small requests concurrently; running each alone wastes the
  matrix kernels and makes torch threads fight over two cores. One worker thread per model takes
  whatever is queued (up to ``batch_size`` documents, waiting at most ``max_wait_ms`` for more)
  and makes one extraction call, which is what lets the gRPC path keep up with the in-process
  path under concurrency.
- **Retrain runs beside serving.** The job runs in its own thread; its progress goes into a queue
  that the caller iterates, and a disconnecting caller does not kill it. On promotion the core
  switches to the new version itself.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaner.categories import Category
from vaner.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable, VanerError
from vaner.progress import ProgressEvent
from vaner.settings import Settings

log = logging.getLogger(__name__)


# ---- plain results ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Concept:
    cui: str
    name: str
    score: float
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entity:
    start: int
    end: int
    text: str
    type: str
    score: float
    concepts: tuple[Concept, ...] = ()


@dataclass(frozen=True)
class DocumentResult:
    id: str
    entities: tuple[Entity, ...]


@dataclass(frozen=True)
class ModelInfo:
    id: str
    latest: bool
    backbone: str
    datasets: tuple[str, ...] = ()
    kb_snapshot: str = ""
    template: dict = field(default_factory=dict, hash=False)
    metrics: dict = field(default_factory=dict, hash=False)
    hyperparameters: dict = field(default_factory=dict, hash=False)
    command: str = ""
    created_at: str = ""
    artifact_path: str = ""

    @classmethod
    def from_record(cls, rec: Any) -> ModelInfo:
        created = getattr(rec, "created_at", "")
        return cls(id=str(rec.id), latest=bool(getattr(rec, "latest", False)), backbone=str(getattr(rec, "backbone", "")),
                   datasets=tuple(getattr(rec, "datasets", ()) or ()),
                   kb_snapshot=str(getattr(rec, "kb_snapshot", "") or ""),
                   template=dict(getattr(rec, "template", {}) or {}), metrics=dict(getattr(rec, "metrics", {}) or {}),
                   hyperparameters=dict(getattr(rec, "hyperparameters", {}) or {}),
                   command=str(getattr(rec, "command", "") or ""),
                   created_at=created.isoformat() if hasattr(created, "isoformat") else str(created or ""),
                   artifact_path=str(getattr(rec, "artifact_path", "") or ""))


@dataclass(frozen=True)
class RetrainParams:
    kb_snapshot: str = "latest"
    datasets: tuple[str, ...] = ()
    dbr_mode: str = "retrieved"
    promote_margin: float | None = None
    overrides: dict = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.dbr_mode not in ("retrieved", "random", "none"):
            raise InvalidArgument(f"dbr_mode must be retrieved, random or none, not {self.dbr_mode!r}")
        if self.promote_margin is not None and self.promote_margin < 0:
            raise InvalidArgument("promote_margin must be >= 0 (F1 points)")


@dataclass(frozen=True)
class RetrainEvent:
    """Either a progress event or the final outcome (``model`` set)."""

    progress: ProgressEvent | None = None
    model: ModelInfo | None = None
    promoted: bool = False


# ---- limits -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    max_documents: int = 512
    max_text_chars: int = 1_000_000

    def check(self, documents: Sequence[tuple[str, str]]) -> None:
        if not documents:
            raise InvalidArgument("no documents to extract from")
        if len(documents) > self.max_documents:
            raise ResourceExhausted(f"{len(documents)} documents in one call; the limit is {self.max_documents} "
                                    "(split the batch or use ExtractStream)")
        for i, (doc_id, text) in enumerate(documents):
            if not isinstance(text, str) or not text.strip():
                raise InvalidArgument(f"document {i} ({doc_id!r}) has an empty text")
            if len(text) > self.max_text_chars:
                raise ResourceExhausted(f"document {i} ({doc_id!r}) has {len(text)} characters; "
                                        f"the limit is {self.max_text_chars}")
            if "\x00" in text:
                raise InvalidArgument(f"document {i} ({doc_id!r}) contains a NUL character")


# ---- extraction back ends -----------------------------------------------------------------------
ExtractFn = Callable[[list[tuple[str, str]], list[Category]], list[DocumentResult]]


def _entity_from(obj: Any) -> Entity:
    """Accept the extractor's span objects or dicts; keeps this core independent of their class."""
    get = obj.get if isinstance(obj, dict) else (lambda k, d=None: getattr(obj, k, d))
    cat = get("type", None) or get("category", None)
    cat_name = cat.value if isinstance(cat, Category) else str(cat)
    concepts = tuple(Concept(cui=str(_g(c, "cui")), name=str(_g(c, "name", "")), score=float(_g(c, "score", 0.0)),
                             categories=tuple(str(getattr(x, "value", x)) for x in (_g(c, "categories", ()) or ())))
                     for c in (get("concepts", ()) or ()))
    return Entity(start=int(get("start")), end=int(get("end")), text=str(get("text")), type=cat_name,
                  score=float(get("score", 0.0) or 0.0), concepts=concepts)


def _g(obj: Any, key: str, default: Any = None) -> Any:
    return obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)


def extractor_backend(artifact_path: str | Path, device: str, batch_size: int) -> ExtractFn:
    """The real back end: tagger.extract.Extractor over a loaded VanerTagger."""
    from tagger.model import VanerTagger

    try:
        from tagger.extract import Extractor
        from tagger.formats import Document
    except ImportError as exc:  # pragma: no cover - only while the extractor module is missing
        raise FailedPrecondition(f"the extractor is not available in this build: {exc}") from exc
    model = VanerTagger.load(artifact_path, device=device)
    extractor = Extractor(model, batch_size=batch_size, model_id=Path(artifact_path).name)

    def run(documents: list[tuple[str, str]], categories: list[Category]) -> list[DocumentResult]:
        docs = [Document(id=i, text=t) for i, t in documents]
        out = extractor.extract(docs, categories=categories)
        return [DocumentResult(id=str(_g(d, "id")), entities=tuple(_entity_from(e) for e in (_g(d, "entities") or ())))
                for d in out]

    return run


@dataclass
class _Job:
    documents: list[tuple[str, str]]
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

    def submit(self, documents: list[tuple[str, str]], categories: Sequence[Category]) -> Future:
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


@dataclass
class _Serving:
    info: ModelInfo
    batcher: MicroBatcher


RetrainFn = Callable[..., Any]


class TaggerCore:
    """Holds the serving model; thread-safe for any number of concurrent callers."""

    def __init__(self, settings: Settings, *, model_ref: str = "latest", device: str = "cpu", batch_size: int = 32,
                 limits: Limits | None = None, max_wait_ms: float = 2.0,
                 backend_factory: Callable[[str | Path, str, int], ExtractFn] = extractor_backend,
                 retrain_fn: RetrainFn | None = None, retrieval_address: str = "", kb_address: str = "",
                 client_options: dict | None = None, registry: Any = None):
        self.settings = settings
        self.model_ref = model_ref
        self.device = device
        self.batch_size = batch_size
        self.limits = limits or Limits()
        self.max_wait_ms = max_wait_ms
        self.backend_factory = backend_factory
        self.retrain_fn = retrain_fn
        self.retrieval_address = retrieval_address
        self.kb_address = kb_address
        self.client_options = client_options or {}
        self._registry = registry
        self._serving: _Serving | None = None
        self._swap_lock = threading.Lock()
        self._retrain_lock = threading.Lock()
        self.started_at = time.time()

    # ---- model lifecycle ----------------------------------------------------------------------
    @property
    def registry(self) -> Any:
        if self._registry is None:
            from tagger.registry import ModelRegistry

            self._registry = ModelRegistry(self.settings)
        return self._registry

    def resolve(self, ref: str, allow_path: bool = False) -> tuple[ModelInfo, Path]:
        """A version id or ``latest``; an artifact directory only from the server's own config
        (``allow_path``), never from a caller, who must not make the server read arbitrary paths."""
        ref = (ref or "latest").strip()
        path = Path(ref)
        if allow_path and (path / "tagger_config.json").exists():
            return ModelInfo(id=path.name, latest=False, backbone="", artifact_path=str(path)), path
        if "/" in ref or "\\" in ref or len(ref) > 200:
            raise NotFound(f"unknown model version {ref[:80]!r}")
        rec = self.registry.resolve(ref)
        return ModelInfo.from_record(rec), Path(rec.artifact_path)

    def start(self) -> ModelInfo:
        return self.load_model(self.model_ref, allow_path=True)

    @property
    def ready(self) -> bool:
        return self._serving is not None

    def load_model(self, ref: str, allow_path: bool = False) -> ModelInfo:
        """Switch to ``ref``; requests already accepted finish on the previous model."""
        with self._swap_lock:  # one load at a time; serving continues meanwhile
            info, path = self.resolve(ref, allow_path)
            current = self._serving
            if current is not None and current.info.id == info.id and current.info.artifact_path == info.artifact_path:
                self._serving = _Serving(info, current.batcher)  # refresh the 'latest' flag only
                return info
            log.info("loading model %s from %s", info.id, path)
            fn = self.backend_factory(path, self.device, self.batch_size)
            batcher = MicroBatcher(fn, max_documents=self.batch_size, max_wait_ms=self.max_wait_ms, name=info.id)
            self._serving, old = _Serving(info, batcher), current
        if old is not None:
            old.batcher.close(wait=True)
            log.info("model %s replaced by %s; its in-flight requests finished", old.info.id, info.id)
        return info

    def model_info(self) -> ModelInfo:
        serving = self._serving
        if serving is None:
            raise Unavailable("no model loaded yet")
        try:
            latest = self.registry.resolve("latest").id == serving.info.id
        except VanerError:
            latest = serving.info.latest
        return ModelInfo(**{**serving.info.__dict__, "latest": latest})

    def close(self) -> None:
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.batcher.close(wait=True)

    # ---- extraction ---------------------------------------------------------------------------
    def extract(self, documents: Sequence[tuple[str, str]], categories: Sequence[Category] | None = None,
                timeout: float | None = None) -> tuple[list[DocumentResult], str]:
        docs = [(str(i), t) for i, t in documents]
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
            return fut.result(timeout=timeout), serving.info.id
        raise Unavailable("the model is being replaced; retry")

    # ---- retraining ---------------------------------------------------------------------------
    def retrain(self, params: RetrainParams) -> Iterator[RetrainEvent]:
        """Run one retrain; yields progress, then the outcome. A second one is refused."""
        from vaner.errors import AlreadyRunning

        if not self._retrain_lock.acquire(blocking=False):
            raise AlreadyRunning("a retrain is already running in this tagger; wait for it to finish")
        events: queue.Queue[RetrainEvent | BaseException | None] = queue.Queue()

        def job() -> None:
            try:
                outcome = self._run_retrain(params, lambda ev: events.put(RetrainEvent(progress=ev)))
                events.put(outcome)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                events.put(exc)
            finally:
                self._retrain_lock.release()
                events.put(None)

        threading.Thread(target=job, name="retrain", daemon=True).start()
        return self._drain(events)

    @staticmethod
    def _drain(events: queue.Queue) -> Iterator[RetrainEvent]:
        while True:
            item = events.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _run_retrain(self, params: RetrainParams, progress: Callable[[ProgressEvent], None]) -> RetrainEvent:
        fn = self.retrain_fn or _default_retrain
        result = fn(self.settings, params, progress=progress, retrieval_address=self.retrieval_address,
                    kb_address=self.kb_address, client_options=self.client_options)
        info = ModelInfo.from_record(_g(result, "model") or _g(result, "record"))
        promoted = bool(_g(result, "promoted", False))
        if promoted:
            progress(ProgressEvent("load", 0, 1, 0.0, None, f"switching to {info.id}"))
            info = self.load_model(info.id)
        return RetrainEvent(model=info, promoted=promoted)


def _default_retrain(settings: Settings, params: RetrainParams, *, progress: Callable[[ProgressEvent], None],
                     retrieval_address: str = "", kb_address: str = "", client_options: dict | None = None) -> Any:
    """Delegate to retrieval.retrain.Retrainer, the one orchestration of build DBR -> train ->
    evaluate -> register -> promote. With a Retrieval address, DBR samples are built by that service
    (over gRPC); with a KB address, the snapshot is resolved by the KB service, so this process never
    opens the vector store another process owns."""
    from dataclasses import fields as dc_fields

    try:
        from retrieval.retrain import Retrainer, RetrainRequest
    except ImportError as exc:  # pragma: no cover
        raise FailedPrecondition(f"retraining is not available in this build: {exc}") from exc
    known = {f.name for f in dc_fields(RetrainRequest)}
    extra = {k: v for k, v in params.overrides.items() if k in known}
    train_overrides = {**extra.pop("train_overrides", {}), **{k: v for k, v in params.overrides.items() if k not in known}}
    kwargs: dict[str, Any] = {"kb_snapshot": params.kb_snapshot, "dbr_mode": params.dbr_mode,
                              "train_overrides": train_overrides, "command": "Tagger.Retrain", **extra}
    if params.datasets:
        kwargs["datasets"] = tuple(params.datasets)
    if params.promote_margin is not None:
        kwargs["promote_margin"] = params.promote_margin
    dbr_source = None
    kb = None
    if retrieval_address:
        dbr_source = _remote_dbr_source(retrieval_address, settings, client_options or {})
    if kb_address:
        from clients.kb import KnowledgeBaseClient

        kb = KnowledgeBaseClient(kb_address, **(client_options or {}))
    retrainer = Retrainer(settings, kb=kb, dbr_source=dbr_source)
    return retrainer.run(RetrainRequest(**kwargs), progress=progress)


def _remote_dbr_source(address: str, settings: Settings, client_options: dict) -> Callable[..., Any]:
    """A Retrainer ``dbr_source`` that asks the Retrieval service (with this stack's token/TLS) and
    reads the set it wrote from the shared state volume."""
    from clients.retrieval import RetrievalClient
    from retrieval.dbr import load_cached

    client = RetrievalClient(address, **client_options)

    def source(datasets, params, snapshot, data_dir, progress):  # noqa: ANN001, ANN202
        def relay(p: Any) -> None:
            if progress is not None:
                progress(p)  # clients yield core ProgressEvents

        done = client.build_dbr(list(datasets), snapshot=snapshot, mode=params.mode, data_dir=data_dir or "",
                                seed=params.seed, max_positive=params.max_positive, max_negative=params.max_negative,
                                top_k=params.top_k, on_progress=relay)
        local = load_cached(settings, done.id)
        if local is None:
            raise Unavailable(f"DBR set {done.id} was written at {done.path} by the retrieval service, which this "
                              "process cannot read; the services must share VANER_HOME")
        return local

    return source
