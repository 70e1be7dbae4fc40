"""The tagger's serving core, free of gRPC: which model serves, how requests reach it, how a new
version replaces it, and how a retrain runs beside it. ``services/tagger_servicer.py`` is a thin
gRPC face over :class:`TaggerCore`.

Why these choices:

- **Same path as the CLI.** A model is loaded by :func:`tagger.extract.load_for_inference` and
  run by :class:`tagger.extract.Extractor` (its ``plan``, ``window_proba`` and ``assemble``, the
  pieces ``extract`` is made of), so the service and the CLI give the same entities from the same
  (merged) weights.
- **Hot swap by reference.** A request takes the current ``_Serving`` (model record + its own
  micro-batcher) once, at its start, and finishes on it. ``load_model`` builds the new one
  completely before publishing it, then lets the old batcher drain its queue and stop. So a
  version switch drops nothing and no request ever mixes two models; for a moment both models are
  in memory, which is the price of never pausing.
- **Micro-batching over model windows, round-robin across calls.** A call is planned in its own
  thread (sentences, one query per sentence and type, grouped into model windows by the model:
  one per query, or one per sentence for a multi-type model; cost in words, refused above
  ``max_call_words``), then its model windows are handed to one worker thread per model as a
  lazy iterator. Each forward pass takes up to ``batch_size`` windows, one from each waiting call
  in turn; so concurrent small requests share a pass (what lets the gRPC path keep up with the
  in-process one), and a small request behind a huge document is answered after about one pass
  instead of after the whole document.
- **Cooperative cancellation.** Python threads cannot be killed, so before every pass the worker
  drops the calls whose ``should_stop`` (services/calls.py: client gone, deadline passed, server
  shutting down) says so, and those whose waiting caller gave up: an abandoned call stops costing
  CPU within one pass, and windows never encoded are never computed.
- **Following ``latest``.** A tagger that serves ``latest`` (by configuration, or by loading the
  version that is latest) polls the registry every ``reconcile_seconds`` and switches when
  ``latest`` moved, so a promotion whose notification was lost (or which reached another replica)
  is picked up anyway. Loading any other version pins it until ``latest`` is loaded again.
- **Retrain runs beside serving.** The job (injected: the orchestration lives in
  ``retrieval/retrain.py``, above this package) runs in its own thread; its progress is iterated
  by the caller, and a disconnecting caller does not kill it. On promotion the core switches to
  the new version itself.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tagger.formats import Document
from tagger.registry import ModelRecord, ModelRegistry, resolve_model
from vaner.cancel import StopCheck
from vaner.categories import Category
from vaner.errors import (
    AlreadyRunning,
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    VanerError,
)
from vaner.progress import ProgressCallback, ProgressEvent
from vaner.settings import Settings
from vaner.streams import ThreadStream

log = logging.getLogger(__name__)

PROBE_TEXT = "Aspirin inhibits COX-1."
PROBE_TIMEOUT_S = 30.0  # a probe waits its turn in the fair queue: about one forward pass


@dataclass(frozen=True)
class Limits:
    """Per-call limits; messages name the ``tagger.*`` setting so an operator knows what to raise."""

    max_documents: int = 512
    max_text_chars: int = 1_000_000
    max_call_words: int = 200_000

    def check(self, documents: Sequence[Document]) -> None:
        if not documents:
            raise InvalidArgument("no documents to extract from")
        if len(documents) > self.max_documents:
            raise ResourceExhausted(f"{len(documents)} documents in one call; the limit is {self.max_documents} "
                                    "(tagger.max_documents): split the batch or use ExtractStream")
        for i, doc in enumerate(documents):
            if not isinstance(doc.text, str) or not doc.text.strip():
                raise InvalidArgument(f"document {i} ({doc.id!r}) has an empty text")
            if len(doc.text) > self.max_text_chars:
                raise ResourceExhausted(f"document {i} ({doc.id!r}) has {len(doc.text)} characters; "
                                        f"the limit is {self.max_text_chars} (tagger.max_text_chars)")
            if "\x00" in doc.text:
                raise InvalidArgument(f"document {i} ({doc.id!r}) contains a NUL character")
        # Every whitespace-separated chunk holds at least one word: refuse before splitting sentences.
        self.check_cost(sum(len(doc.text.split()) for doc in documents), at_least=True)

    def check_cost(self, words: int, at_least: bool = False) -> None:
        """The cost cap: what one call may ask of the model, in words (the tokenizer's words of every
        sentence; the model's work grows with them, whatever the number of documents)."""
        if words > self.max_call_words:
            raise ResourceExhausted(f"this call holds {'at least ' if at_least else ''}{words} words; "
                                    f"the limit is {self.max_call_words} per call "
                                    "(tagger.max_call_words): split the text over several calls, or send "
                                    "documents one by one with ExtractStream")


@dataclass
class CallPlan:
    """One call, planned by a back end: its model work as a lazy iterator of units (encoded only
    when the worker takes them), its cost, and how to turn the outputs, in unit order, into the
    answer. Outputs carry what ``finish`` needs, so units are freed once their pass has run."""

    units: Iterator[Any]
    words: int
    finish: Callable[[list[Any]], list[Document]]


class Backend(Protocol):
    """A loaded model as the serving core drives it."""

    def plan(self, documents: list[Document], categories: list[Category],
             should_stop: StopCheck | None) -> CallPlan: ...

    def run(self, units: list[Any]) -> list[Any]: ...


# (artifact folder, device, batch size) -> the Backend over the loaded model.
BackendFactory = Callable[[Path, str, int], Backend]
# (retrain request, progress) -> an outcome with ``model`` (a ModelRecord) and ``promoted``.
RetrainFn = Callable[[Any, ProgressCallback], Any]


class ExtractorBackend:
    """The real back end: the CLI's :class:`tagger.extract.Extractor`. A unit is one model window
    (a sentence asked for one type, or for all its types by a multi-type model; long sentences
    take several), so one pass costs at most ``batch_size`` windows, however big a document is."""

    def __init__(self, extractor: Any):
        self.extractor = extractor

    def plan(self, documents: list[Document], categories: list[Category],
             should_stop: StopCheck | None = None) -> CallPlan:
        plan = self.extractor.plan(documents, categories, should_stop=should_stop)
        queries = plan.queries
        tagger = self.extractor.tagger
        groups = tagger.window_groups(queries)  # the queries one set of windows answers
        # Shortest first inside a call: consecutive passes get windows of similar length.
        order = sorted(range(len(groups)), key=lambda g: len(queries[groups[g][0]].words))

        def units() -> Iterator[tuple[int, Any]]:
            for gi in order:
                for window in tagger.query_windows(queries[groups[gi][0]]):
                    yield gi, window

        def finish(outputs: list[tuple[int, int, Any]]) -> list[Document]:
            return self.extractor.assemble(plan, tagger.fold(queries, groups, outputs), should_stop=should_stop)

        return CallPlan(units(), plan.words, finish)

    def run(self, units: list[Any]) -> list[Any]:
        """(group index, first word, probabilities) per window: all ``finish`` needs."""
        probs = self.extractor.window_proba([window for _, window in units])
        return [(gi, window.word_offset, p) for (gi, window), p in zip(units, probs, strict=True)]


def extractor_backend(artifact: str | Path, device: str, batch_size: int, threads: int = 0) -> ExtractorBackend:
    """The real back end: the CLI's loader and extractor."""
    from tagger.extract import Extractor, load_for_inference

    return ExtractorBackend(Extractor(load_for_inference(artifact, device=device, threads=threads),
                                      batch_size=batch_size, model_id=Path(artifact).name))


_NOTHING = object()


@dataclass(eq=False)
class _Call:
    units: Iterator[Any]
    future: Future
    should_stop: StopCheck | None
    done: list[Any] = field(default_factory=list)  # outputs, in unit order
    in_pass: int = 0
    exhausted: bool = False

    def stopped(self) -> bool:
        if self.future.done():  # its caller gave up (cancelled the future) or it already failed
            return True
        try:
            return self.should_stop is not None and bool(self.should_stop())
        except Exception:  # noqa: BLE001 - a broken check means the call cannot be answered anyway
            return True

    def next_unit(self) -> Any:
        """The call's next unit, or _NOTHING once it has no more (or failed producing one)."""
        if self.exhausted or self.future.done():
            return _NOTHING
        try:
            return next(self.units)
        except StopIteration:
            self.exhausted = True
        except BaseException as exc:  # noqa: BLE001 - e.g. a text the tokenizer refuses: this call only
            self.exhausted = True
            self.fail(exc)
        return _NOTHING

    def fail(self, exc: BaseException) -> None:
        with contextlib.suppress(InvalidStateError):  # its caller may cancel at any moment
            self.future.set_exception(exc)

    def complete(self) -> None:
        with contextlib.suppress(InvalidStateError):
            self.future.set_result(self.done)


class MicroBatcher:
    """Runs the calls for one model in shared forward passes (one worker thread), taking units
    round-robin across calls and dropping stopped calls before every pass (module docstring)."""

    def __init__(self, run: Callable[[list[Any]], list[Any]], max_units: int = 32, max_wait_ms: float = 2.0,
                 name: str = "model"):
        self.run = run
        self.max_units = max_units
        self.max_wait = max_wait_ms / 1000.0
        self.passes = 0  # forward passes run, and units in them: what tests and probes read
        self.units_run = 0
        self.dropped = 0
        self._q: queue.Queue[_Call | None] = queue.Queue()
        self._stopped = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, units: Iterable[Any], should_stop: StopCheck | None = None) -> Future:
        """Queue one call; the future gets its outputs in unit order. Cancel the future to abandon
        the call (it is dropped before the next pass)."""
        fut: Future = Future()
        with self._lock:
            if self._stopped:
                raise Unavailable("the model is being replaced; retry")
            self._q.put(_Call(iter(units), fut, should_stop))
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

    # ---- the worker ---------------------------------------------------------------------------
    def _loop(self) -> None:
        active: collections.deque[_Call] = collections.deque()
        closing = False
        try:
            while active or not closing:
                if not active:
                    call = self._q.get()
                    if call is None:
                        closing = True
                        continue
                    active.append(call)
                    closing = self._collect(active, self.max_wait) or closing  # let concurrent callers join
                elif not closing:
                    closing = self._collect(active, 0.0) or closing
                self._drop_stopped(active)
                batch = self._take(active)
                if batch:
                    self._run(batch)
                    self._settle(active, {id(c): c for c, _ in batch}.values())
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            log.exception("batcher worker failed")
            with self._lock:
                self._stopped = True
            err = Unavailable(f"the model worker failed ({type(exc).__name__}); retry")
            while active:
                active.popleft().fail(err)
            while True:
                try:
                    call = self._q.get_nowait()
                except queue.Empty:
                    break
                if call is not None:
                    call.fail(err)

    def _collect(self, active: collections.deque[_Call], wait: float) -> bool:
        """Move newly submitted calls into the rotation; True once ``close`` was called."""
        end = time.monotonic() + wait
        while True:
            try:
                left = end - time.monotonic()
                call = self._q.get(timeout=left) if left > 0 and len(active) < self.max_units else self._q.get_nowait()
            except queue.Empty:
                return False
            if call is None:
                return True
            active.append(call)

    def _drop_stopped(self, active: collections.deque[_Call]) -> None:
        for call in [c for c in active if c.stopped()]:
            self._drop(active, call)

    def _drop(self, active: collections.deque[_Call], call: _Call) -> None:
        active.remove(call)
        call.fail(Cancelled("extraction cancelled: the caller went away or its deadline passed"))
        self.dropped += 1
        log.info("dropped a stopped call after %d unit(s)", len(call.done),
                 extra={"event": "call_dropped", "units_done": len(call.done)})

    def _take(self, active: collections.deque[_Call]) -> list[tuple[_Call, Any]]:
        """Up to ``max_units`` units, one per call in turn; the rotation carries over between
        passes, so with more calls than slots every call still gets its turn. A call found to
        have no more units, with none in this pass, is answered at once."""
        batch: list[tuple[_Call, Any]] = []
        misses = 0
        while active and len(batch) < self.max_units and misses < len(active):
            call = active[0]
            active.rotate(-1)
            unit = call.next_unit()
            if unit is _NOTHING:
                misses += 1
                if call.in_pass == 0 and not call.exhausted and call.future.done():
                    self._drop(active, call)  # its caller gave up since the last check
                    misses = 0
                elif call.in_pass == 0 and call.exhausted:
                    active.remove(call)
                    call.complete()
                    misses = 0
                continue
            misses = 0
            call.in_pass += 1
            batch.append((call, unit))
        return batch

    def _run(self, batch: list[tuple[_Call, Any]]) -> None:
        units = [u for _, u in batch]
        try:
            outputs = self.run(units)
            if len(outputs) != len(units):
                raise RuntimeError(f"back end returned {len(outputs)} outputs for {len(units)} units")
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller(s)
            calls = list({id(c): c for c, _ in batch}.values())
            if len(calls) == 1:
                calls[0].fail(exc)
                return
            # One caller's input must not fail the others' requests: retry each call's units alone.
            for call in calls:
                self._run([(c, u) for c, u in batch if c is call])
            return
        self.passes += 1
        self.units_run += len(units)
        for (call, _), out in zip(batch, outputs, strict=True):
            call.done.append(out)

    def _settle(self, active: collections.deque[_Call], calls: Iterable[_Call]) -> None:
        for call in calls:
            call.in_pass = 0
            if call not in active:
                continue
            if call.future.cancelled():
                self._drop(active, call)  # its caller gave up during the pass
            elif call.future.done() or call.exhausted:
                active.remove(call)
                call.complete()


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
    backend: Backend
    batcher: MicroBatcher


class TaggerCore:
    """Holds the serving model; thread-safe for any number of concurrent callers."""

    def __init__(self, settings: Settings, *, model_ref: str = "latest", device: str = "cpu", batch_size: int = 32,
                 threads: int = 0, limits: Limits | None = None, max_wait_ms: float = 2.0,
                 backend_factory: BackendFactory | None = None, retrain_fn: RetrainFn | None = None,
                 registry: ModelRegistry | None = None, reconcile_seconds: float = 0.0,
                 probe_timeout: float = PROBE_TIMEOUT_S):
        self.settings = settings
        self.model_ref = model_ref
        self.device = device
        self.batch_size = batch_size
        self.limits = limits or Limits()
        self.max_wait_ms = max_wait_ms
        self.backend_factory: BackendFactory = backend_factory or (
            lambda path, dev, batch: extractor_backend(path, dev, batch, threads))
        self.retrain_fn = retrain_fn
        self.reconcile_seconds = reconcile_seconds
        self.probe_timeout = probe_timeout
        self.follows_latest = False
        self.reconcile_error: str | None = None
        self._failed_latest: str | None = None  # a latest that failed to load: not retried every poll
        self._registry = registry
        self._serving: _Serving | None = None
        self._swap_lock = threading.Lock()
        self._retrain_lock = threading.Lock()
        self._stop = threading.Event()
        self._reconciler: threading.Thread | None = None
        self.started_at = time.time()

    # ---- model lifecycle ----------------------------------------------------------------------
    @property
    def registry(self) -> ModelRegistry:
        if self._registry is None:
            self._registry = ModelRegistry(self.settings)
        return self._registry

    def start(self) -> ModelRecord:
        """Load the configured model (only the server's own config may name a folder), then follow
        ``latest`` every ``reconcile_seconds`` when that is what it serves."""
        record = self.load_model(self.model_ref, allow_path=True)
        if self.reconcile_seconds > 0 and self._reconciler is None:
            self._reconciler = threading.Thread(target=self._reconcile_loop, name="tagger-reconcile", daemon=True)
            self._reconciler.start()
        return record

    @property
    def ready(self) -> bool:
        return self._serving is not None

    def load_model(self, ref: str, allow_path: bool = False) -> ModelRecord:
        """Switch to ``ref``; requests already accepted finish on the previous model. Loading
        ``latest`` (or the version that is latest) follows it from then on; any other pins it."""
        with self._swap_lock:  # one load at a time; serving continues meanwhile
            record = resolve_model(ref, lambda: self.registry, allow_path=allow_path)
            old = self._swap(record)
            self.follows_latest = (ref or "latest").strip() == "latest" or (record.registered and record.latest)
        self._retire(old, record)
        return record

    def _swap(self, record: ModelRecord) -> _Serving | None:
        """Publish ``record`` (under the swap lock); the replaced serving, to retire, or None."""
        current = self._serving
        if current is not None and current.record.id == record.id \
                and current.record.artifact_path == record.artifact_path and current.batcher.alive:
            self._serving = _Serving(record, current.backend, current.batcher)  # refresh the 'latest' flag only
            return None
        log.info("loading model %s from %s", record.id, record.artifact_path)
        backend = self.backend_factory(Path(record.artifact_path), self.device, self.batch_size)
        batcher = MicroBatcher(backend.run, max_units=self.batch_size, max_wait_ms=self.max_wait_ms, name=record.id)
        self._serving = _Serving(record, backend, batcher)
        return current

    @staticmethod
    def _retire(old: _Serving | None, record: ModelRecord) -> None:
        if old is not None:
            old.batcher.close(wait=True)
            log.info("model %s replaced by %s; its in-flight requests finished", old.record.id, record.id)

    def reconcile(self) -> ModelRecord | None:
        """One poll: when this tagger follows ``latest`` and the registry's ``latest`` is another
        version, switch to it. The record switched to, or None. A version that failed to load is
        reported (``reconcile_error``, health details) and not retried until ``latest`` moves."""
        with self._swap_lock:
            if not self.follows_latest or self._stop.is_set():
                return None
            try:
                latest = self.registry.resolve("latest")
            except VanerError as exc:
                self._note_reconcile_error(f"cannot read the registry's latest: {exc.message}")
                return None
            current = self._serving
            if current is not None and current.record.id == latest.id:
                self.reconcile_error = self._failed_latest = None
                return None
            if latest.id == self._failed_latest:
                return None
            log.info("registry latest is %s, serving %s: switching", latest.id,
                     current.record.id if current else None, extra={"event": "reconcile", "latest": latest.id})
            try:
                old = self._swap(latest)
            except Exception as exc:  # noqa: BLE001 - keep serving the current model
                self._failed_latest = latest.id
                self._note_reconcile_error(f"cannot load latest {latest.id}: "
                                           f"{getattr(exc, 'message', None) or f'{type(exc).__name__}: {exc}'}")
                return None
            self.reconcile_error = self._failed_latest = None
        self._retire(old, latest)
        return latest

    def _note_reconcile_error(self, message: str) -> None:
        if message != self.reconcile_error:
            log.warning("reconcile: %s", message, extra={"event": "reconcile_failed"})
        self.reconcile_error = message

    def _reconcile_loop(self) -> None:
        while not self._stop.wait(self.reconcile_seconds):
            try:
                self.reconcile()
            except Exception:  # noqa: BLE001 - the poll must outlive any one failure
                log.exception("reconcile failed")

    def model_info(self) -> ModelRecord:
        serving = self._serving
        if serving is None:
            raise Unavailable("no model loaded yet")
        try:
            latest = serving.record.registered and self.registry.resolve("latest").id == serving.record.id
        except VanerError:
            latest = serving.record.latest
        return dataclasses.replace(serving.record, latest=latest)

    def check_health(self) -> dict[str, str]:
        """A readiness probe (services/server.py ServiceParts): raises :class:`Unavailable` unless a
        model is loaded and answers a one-sentence extraction within ``probe_timeout``, which is
        queued fairly like any call, so a busy tagger still answers it after about one pass."""
        serving = self._serving
        if serving is None:
            raise Unavailable("the tagger has no model loaded")
        if not serving.batcher.alive:
            raise Unavailable(f"the worker of model {serving.record.id} has stopped")
        try:
            self.extract([Document("health-probe", PROBE_TEXT)], [Category.GENE], timeout=self.probe_timeout)
        except FutureTimeout as exc:
            raise Unavailable(f"model {serving.record.id} did not answer a one-sentence probe within "
                              f"{self.probe_timeout:g}s") from exc
        except VanerError as exc:
            raise Unavailable(f"model {serving.record.id} failed a probe: {exc.message}") from exc
        except Exception as exc:
            raise Unavailable(f"model {serving.record.id} failed a probe: {type(exc).__name__}: {exc}") from exc
        return {"model": serving.record.id}

    def close(self) -> None:
        self._stop.set()
        with self._swap_lock:  # a load in progress finishes first, then nothing is published again
            serving, self._serving = self._serving, None
        if serving is not None:
            serving.batcher.close(wait=True)

    # ---- extraction ---------------------------------------------------------------------------
    def extract(self, documents: Sequence[Document], categories: Sequence[Category] | None = None,
                timeout: float | None = None, should_stop: StopCheck | None = None) -> tuple[list[Document], str]:
        """The documents with their entities, and the id of the model version that found them.

        ``should_stop`` (true once the caller has gone) lets the worker drop the call between
        passes; a ``timeout`` that passes abandons it the same way (then FutureTimeout)."""
        docs = list(documents)
        self.limits.check(docs)
        cats = list(dict.fromkeys(categories)) if categories else list(Category)
        for _ in range(3):
            serving = self._serving
            if serving is None:
                raise Unavailable("the tagger has no model loaded yet")
            plan = serving.backend.plan(docs, cats, should_stop)
            self.limits.check_cost(plan.words)
            try:
                fut = serving.batcher.submit(plan.units, should_stop)
            except Unavailable:
                time.sleep(0.01)  # a swap closed this batcher between our read and submit
                continue
            try:
                done = fut.result(timeout=timeout)
            except FutureTimeout:
                fut.cancel()  # dropped before the next pass
                raise
            return plan.finish(done), serving.record.id
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
