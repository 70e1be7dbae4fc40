"""Building and running one vaner gRPC service process, and supervising the three of them.

Every service gets the same frame: the error-mapping interceptor (plus the token check when a
token is configured), standard ``grpc.health.v1`` health checking that follows the service's
dependencies (database, vector store, KB), server reflection (``grpc.reflection.v1`` and
``v1alpha``), message size limits, JSON-lines logs, a private state directory, and a draining
SIGTERM/SIGINT handler: health says NOT_SERVING for ``server.drain_seconds`` while calls are still
served (load balancers stop sending), then the server stops accepting, in-flight calls get
``server.grace_seconds`` to finish, what is left is cancelled (cores stop at their next batch),
and the process exits on its own.

``serve all`` runs each service as its own process rather than three servers in one: that is how
they are deployed (and scaled) elsewhere, one crashing cannot take the others down, and the
supervisor restarts a service that dies.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from services.config import SERVICES, ServeConfig
from services.interceptors import ErrorMappingInterceptor, TokenAuthInterceptor
from vaner import __version__
from vaner.errors import InvalidArgument, Unavailable
from vaner.permissions import warn_if_exposed

log = logging.getLogger("vaner.services")

SERVICE_NAMES = {"kb": "vaner.v1.KnowledgeBase", "retrieval": "vaner.v1.Retrieval", "tagger": "vaner.v1.Tagger"}
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
RPC_THREAD_PREFIX = "rpc"
EXIT_WAIT_S = 1.0  # after the grace, how long cancelled calls get to notice before the process exits anyway
_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# ---- structured logs ----------------------------------------------------------------------------
class JsonFormatter(logging.Formatter):
    """One JSON object per line: machine-readable in every log pipeline, and ``extra=`` fields
    (rpc, code, ref, ms) become keys rather than text to parse."""

    def __init__(self, service: str = ""):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                               + f".{int(record.msecs):03d}Z", "level": record.levelname, "logger": record.name,
                               "msg": record.getMessage()}
        if self.service:
            out["service"] = self.service
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(config: ServeConfig, service: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.server.log_format == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.server.log_level.upper())
    for noisy in ("httpx", "urllib3", "sentence_transformers", "transformers", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ---- building one server ------------------------------------------------------------------------
@dataclass
class ServiceParts:
    """What a service builder hands back: what to close on stop, and probes that raise while a
    dependency (database, vector store, another service) is unavailable."""

    closers: list[Callable[[], None]] = field(default_factory=list)
    probes: list[Callable[[], object]] = field(default_factory=list)


class DependencyMonitor:
    """Keeps standard health in step with the dependencies: NOT_SERVING while a probe fails, so a
    load balancer or Kubernetes stops routing to a KB whose database is gone, SERVING again once
    it is back. Probes run in their own thread (a remote dependency may take its retry budget to
    answer), at once and then every ``interval`` seconds (0: only once); no probes, SERVING."""

    def __init__(self, health_servicer: health.HealthServicer, names: tuple[str, ...],
                 probes: list[Callable[[], object]], interval: float, service: str = ""):
        self.health = health_servicer
        self.names = names
        self.probes = probes
        self.interval = interval
        self.service = service
        self.status: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        failures = []
        for probe in self.probes:
            try:
                probe()
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
                failures.append(getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")
        status = health_pb2.HealthCheckResponse.NOT_SERVING if failures else health_pb2.HealthCheckResponse.SERVING
        if status != self.status:
            if failures:
                log.warning("dependency unavailable: %s", "; ".join(failures),
                            extra={"event": "not_serving", "service": self.service, "reasons": failures})
            elif self.status is not None:
                log.info("dependencies available again", extra={"event": "serving", "service": self.service})
            self.status = status
        for name in self.names:
            self.health.set(name, status)
        return not failures

    def start(self) -> None:
        if not self.probes:
            self.check()
            return
        self._thread = threading.Thread(target=self._run, name=f"health-{self.service}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.check()
        while self.interval > 0 and not self._stop.wait(self.interval):
            self.check()

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Running:
    """A started service: its server, bound port, health servicer and what to close on stop."""

    service: str
    server: grpc.Server
    port: int
    health: health.HealthServicer
    closers: list[Callable[[], None]] = field(default_factory=list)
    monitor: DependencyMonitor | None = None
    executor: futures.ThreadPoolExecutor | None = None

    def drain(self, seconds: float = 0.0, interrupted: threading.Event | None = None) -> None:
        """Report NOT_SERVING (for good) and keep serving for ``seconds``, so that load balancers
        notice and stop sending before the port closes; ``interrupted`` ends the window early."""
        if self.monitor is not None:
            self.monitor.stop()
        self.health.enter_graceful_shutdown()
        if seconds > 0:
            (interrupted or threading.Event()).wait(seconds)

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight calls finish within ``grace``, then
        cancel the rest (their cores see it through ``should_stop`` and stop at the next batch)."""
        self.drain(0)
        self.server.stop(grace).wait()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        for close in self.closers:
            try:
                close()
            except Exception:  # noqa: BLE001 - shutdown continues
                log.exception("error while closing %s", self.service)


def busy_handler_threads(timeout: float) -> list[threading.Thread]:
    """Handler threads still running after the server stopped, once they had ``timeout`` seconds
    to notice their cancellation (idle pool threads exit as soon as the pool shuts down)."""
    end = time.monotonic() + timeout
    while True:
        busy = [t for t in threading.enumerate() if t.name.startswith(f"{RPC_THREAD_PREFIX}_") and t.is_alive()]
        if not busy or time.monotonic() >= end:
            return busy
        busy[0].join(max(min(end - time.monotonic(), 0.05), 0.0))


def enable_reflection(server: grpc.Server, service_names: tuple[str, ...]) -> None:
    """Serve reflection as ``grpc.reflection.v1`` (what current grpcurl, Postman and
    grpc-js tools ask first) and ``v1alpha`` (older tools). grpcio-reflection ships only v1alpha;
    v1 is the same protocol with the same messages (field for field) under a new package name, so
    the v1alpha servicer answers both."""
    names = (*service_names, reflection.SERVICE_NAME, REFLECTION_V1)
    reflection.enable_server_reflection(names, server)
    servicer = reflection.ReflectionServicer(names)
    v1 = grpc.method_handlers_generic_handler(REFLECTION_V1, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)})
    server.add_generic_rpc_handlers((v1,))


def server_credentials(config: ServeConfig) -> grpc.ServerCredentials | None:
    sec = config.security
    if not sec.tls:
        return None
    key, cert = Path(sec.tls_key).read_bytes(), Path(sec.tls_cert).read_bytes()
    ca = Path(sec.tls_client_ca).read_bytes() if sec.tls_client_ca else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def build_server(config: ServeConfig, executor: futures.ThreadPoolExecutor | None = None) -> grpc.Server:
    interceptors: list[grpc.ServerInterceptor] = []
    token = config.security.token()
    if token:
        interceptors.append(TokenAuthInterceptor(token))
    interceptors.append(ErrorMappingInterceptor())
    options = [("grpc.max_receive_message_length", config.server.max_receive_message_bytes),
               ("grpc.max_send_message_length", config.server.max_send_message_bytes),
               ("grpc.so_reuseport", 0)]
    if executor is None:
        executor = futures.ThreadPoolExecutor(max_workers=config.server.max_workers,
                                              thread_name_prefix=RPC_THREAD_PREFIX)
    return grpc.server(executor, interceptors=interceptors, options=options,
                       maximum_concurrent_rpcs=config.server.max_workers * 16)


def client_options_for_siblings(config: ServeConfig) -> dict:
    """How one service of the stack dials another: same token, same CA, the stack's deadlines."""
    opts: dict[str, Any] = {"deadlines": dict(config.deadlines)}
    if config.security.token_file:
        opts["token_file"] = config.security.token_file
    if config.security.tls:
        opts["tls"] = True
        opts["tls_ca"] = config.security.tls_cert  # a self-signed stack cert doubles as its CA
    return opts


def add_kb(server: grpc.Server, config: ServeConfig, kb: Any = None) -> ServiceParts:
    """The KB service; ``kb`` replaces the KnowledgeBase built from the config (tests pass one
    with a small encoder)."""
    from kb_ingest.kb import KnowledgeBase
    from services.kb_servicer import KnowledgeBaseServicer
    from services.server_files import AllowedRoots
    from vaner.v1 import kb_pb2_grpc

    kb = kb if kb is not None else KnowledgeBase(config.settings())
    servicer = KnowledgeBaseServicer(kb, allowed_roots=AllowedRoots(config.ingest.allowed_roots),
                                     max_search_queries=config.kb.max_search_queries)
    kb_pb2_grpc.add_KnowledgeBaseServicer_to_server(servicer, server)
    close = getattr(kb, "close", None)
    return ServiceParts(closers=[close] if close else [], probes=[kb.health])


def _add_retrieval(server: grpc.Server, config: ServeConfig) -> ServiceParts:
    from services.retrieval_servicer import RetrievalServicer
    from vaner.v1 import retrieval_pb2_grpc

    kb = None
    if config.retrieval.kb_address:
        from clients.kb import KnowledgeBaseClient

        kb = RemoteKnowledgeBase(KnowledgeBaseClient(config.retrieval.kb_address,
                                                     **client_options_for_siblings(config)))
    servicer = RetrievalServicer(config.settings(), kb)
    retrieval_pb2_grpc.add_RetrievalServicer_to_server(servicer, server)
    return ServiceParts(probes=[lambda: servicer.kb.health()])


def add_tagger(server: grpc.Server, config: ServeConfig, core: Any = None) -> ServiceParts:
    """The Tagger service; ``core`` replaces the TaggerCore built from the config (tests pass one
    over a fake back end). Health follows the model: NOT_SERVING while none is loaded or it fails
    a one-sentence probe (``TaggerCore.check_health``); the KB that Extract links against is not a
    health dependency (linking is optional; a call that asks for it gets the KB's own error)."""
    from services.tagger_servicer import TaggerServicer
    from vaner.v1 import tagger_pb2_grpc

    if core is None:
        core = _tagger_core(config)
    core.start()
    kb = LinkingKnowledgeBase(config)
    tagger_pb2_grpc.add_TaggerServicer_to_server(TaggerServicer(core, kb=kb), server)
    return ServiceParts(closers=[core.close, kb.close], probes=[core.check_health])


class LinkingKnowledgeBase:
    """The knowledge base the tagger links Extract's spans against, reached the way retrieval
    reaches it: the KB service at ``tagger.kb_address`` (what ``serve all`` sets with the embedded
    vector store, which only the KB process may open), else a KnowledgeBase on this state dir.
    Opened at the first linking call, so a tagger that never links never touches the store."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self._kb: Any = None
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            if self._kb is None:
                address = self.config.tagger.kb_address
                if address:
                    from clients.kb import KnowledgeBaseClient

                    self._kb = RemoteKnowledgeBase(KnowledgeBaseClient(
                        address, **client_options_for_siblings(self.config)))
                else:
                    from kb_ingest.kb import KnowledgeBase

                    self._kb = KnowledgeBase(self.config.settings())
            return self._kb

    def close(self) -> None:
        with self._lock:
            kb, self._kb = self._kb, None
        if kb is not None:
            kb.close()


def _tagger_core(config: ServeConfig) -> Any:
    from clients.base import ClientOptions
    from retrieval.remote import service_retrainer
    from tagger.serving import Limits, TaggerCore

    t = config.tagger
    settings = config.settings()
    siblings = ClientOptions(**client_options_for_siblings(config))

    def retrain(request: Any, progress: Callable) -> Any:
        retrainer = service_retrainer(settings, retrieval_address=t.retrieval_address, kb_address=t.kb_address,
                                      options=siblings)
        return retrainer.run(request, progress=progress)

    return TaggerCore(settings, model_ref=t.model, device=t.device, batch_size=t.batch_size, threads=t.threads,
                      limits=Limits(t.max_documents, t.max_text_chars, t.max_call_words), retrain_fn=retrain,
                      reconcile_seconds=t.reconcile_seconds)


class RemoteKnowledgeBase:
    """What the retrieval core needs from a KB, answered by the KB service over gRPC, for a
    retrieval service that does not share the KB's state volume. Queries are encoded here with the
    snapshot's recorded encoder and searched by vector, as the in-process path does."""

    def __init__(self, client: Any):
        self.client = client
        self._encoders: dict[str, Any] = {}

    def close(self) -> None:
        self.client.close()

    def get_snapshot(self, ref: str = "latest") -> Any:
        return self.client.get_snapshot(ref)

    def health(self) -> dict[str, str]:
        """The KB service's own view of its database and vector store (its Health RPC)."""
        h = self.client.health()
        if not h.ok:
            raise Unavailable(f"the KB service is not ready: {h.details.get('error') or h.details}")
        return dict(h.details)

    def search(self, texts=None, *, vectors=None, snapshot="latest", categories=None, k=10):  # noqa: ANN001, ANN201
        return self.client.search(texts, vectors=vectors, snapshot=snapshot, categories=categories, k=k)

    def encoder_for(self, snapshot: str = "latest") -> Any:
        from kb_ingest.encoder import load_encoder

        name = self.client.get_snapshot(snapshot).encoder
        if name not in self._encoders:
            self._encoders[name] = load_encoder(name)
        return self._encoders[name]

    def sample_random(self, n: int, **kwargs: Any) -> list[Any]:
        from vaner.errors import FailedPrecondition

        raise FailedPrecondition("random DBR needs direct KB access; run retrieval without retrieval.kb_address")


BUILDERS: dict[str, Callable[[grpc.Server, ServeConfig], ServiceParts | list[Callable[[], None]]]] = {
    "kb": add_kb, "retrieval": _add_retrieval, "tagger": add_tagger}


def start_service(service: str, config: ServeConfig, port: int | None = None,
                  builders: dict[str, Callable] | None = None) -> Running:
    """Build, bind and start one service. ``port`` 0 picks a free port (tests)."""
    if service not in SERVICES:
        raise InvalidArgument(f"unknown service {service!r}; expected one of {', '.join(SERVICES)} or all")
    config.settings().ensure_home()
    for what, path in (("security.token_file", config.security.token_file),
                       ("security.tls_key", config.security.tls_key)):
        if path:
            warn_if_exposed(path, what)
    executor = futures.ThreadPoolExecutor(max_workers=config.server.max_workers, thread_name_prefix=RPC_THREAD_PREFIX)
    server = build_server(config, executor)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    full_name = SERVICE_NAMES[service]
    health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_servicer.set(full_name, health_pb2.HealthCheckResponse.NOT_SERVING)
    parts = (builders or BUILDERS)[service](server, config)
    if not isinstance(parts, ServiceParts):
        parts = ServiceParts(closers=list(parts))
    enable_reflection(server, (full_name, health.SERVICE_NAME))
    port = config.server.port(service) if port is None else port
    address = f"{config.server.host}:{port}"
    if ":" in config.server.host and not config.server.host.startswith("["):
        address = f"[{config.server.host}]:{port}"
    creds = server_credentials(config)
    try:
        bound = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
    except RuntimeError as exc:
        raise InvalidArgument(f"cannot bind {address}: {exc}") from exc
    if bound == 0:
        raise InvalidArgument(f"cannot bind {address} (in use?)")
    server.start()
    monitor = DependencyMonitor(health_servicer, ("", full_name), parts.probes, config.server.health_check_seconds,
                                service)
    monitor.start()
    log.info("serving", extra={"event": "serving", "service": service, "address": f"{config.server.host}:{bound}",
                                "port": bound, "tls": creds is not None, "auth": bool(config.security.token_file),
                                "pid": os.getpid(), "version": __version__})
    return Running(service, server, bound, health_servicer, parts.closers, monitor, executor)


def serve_one(service: str, config: ServeConfig, port: int | None = None,
              builders: dict[str, Callable] | None = None) -> int:
    """Run one service in the foreground until SIGTERM/SIGINT, then drain and stop (module
    docstring). A second signal cuts the drain window short; the process is gone within
    ``drain_seconds + grace_seconds + EXIT_WAIT_S``."""
    setup_logging(config, service)
    stop, hurry = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            hurry.set()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    running = start_service(service, config, port, builders)
    stop.wait()
    began = time.monotonic()
    server = config.server
    log.info("draining", extra={"event": "draining", "drain_s": server.drain_seconds, "grace_s": server.grace_seconds})
    running.drain(server.drain_seconds, hurry)
    log.info("stopping", extra={"event": "stopping", "grace_s": server.grace_seconds})
    running.stop(server.grace_seconds)
    busy = busy_handler_threads(EXIT_WAIT_S)
    took = round(time.monotonic() - began, 3)
    if busy:
        # Python cannot kill a thread; the pool's exit hook would wait for it. The calls were
        # cancelled and their clients told so: leave without them rather than outlive the grace.
        log.warning("exiting with %d cancelled call(s) still computing", len(busy),
                    extra={"event": "stopped", "abandoned": len(busy), "seconds": took})
        logging.shutdown()
        os._exit(0)
    log.info("stopped", extra={"event": "stopped", "seconds": took})
    return 0


# ---- supervising the stack ----------------------------------------------------------------------
def stack_config(config: ServeConfig) -> ServeConfig:
    """Wire the three processes of ``serve all`` together. The embedded vector store (qdrant-edge)
    can be opened by one process only (it locks its write-ahead log), so unless a Qdrant server
    is configured, retrieval searches through the KB service and the tagger's Retrain builds DBR
    through the Retrieval service. Addresses set explicitly are kept."""
    if config.qdrant_url or config.settings().qdrant_url:
        return config
    retrieval = config.retrieval if config.retrieval.kb_address else {"kb_address": config.address("kb")}
    tagger: dict = {}
    if not config.tagger.retrieval_address:
        tagger["retrieval_address"] = config.address("retrieval")
    if not config.tagger.kb_address:
        tagger["kb_address"] = config.address("kb")
    return config.with_overrides(retrieval=retrieval, tagger=tagger or config.tagger)


class Supervisor:
    """Starts ``vaner serve <service>`` children with one effective config, restarts one that dies
    (with backoff, at most ``max_restarts`` per service), and forwards SIGTERM/SIGINT."""

    def __init__(self, config: ServeConfig, services: tuple[str, ...] = SERVICES, max_restarts: int = 5,
                 python: str = sys.executable):
        self.config = stack_config(config)
        self.services = services
        self.max_restarts = max_restarts
        self.python = python
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, int] = {s: 0 for s in services}
        self._stop = threading.Event()
        self._dir = tempfile.TemporaryDirectory(prefix="vaner-stack-")
        self.config_path = Path(self._dir.name) / "vaner.toml"
        self.config_path.write_text(self.config.to_toml())

    def command(self, service: str) -> list[str]:
        return [self.python, "-m", "vaner.cli", "serve", service, "--config", str(self.config_path)]

    def spawn(self, service: str) -> None:
        from services.testing import die_with_parent

        self.procs[service] = subprocess.Popen(self.command(service), env={**os.environ, "VANER_CONFIG": ""},
                                               preexec_fn=die_with_parent)
        log.info("started", extra={"event": "child_started", "child": service, "pid": self.procs[service].pid})

    def stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)
        for s in self.services:
            self.spawn(s)
        status = 0
        while not self._stop.wait(0.5):
            for s, proc in list(self.procs.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                if self.restarts[s] >= self.max_restarts:
                    log.error("giving up", extra={"event": "child_failed", "child": s, "rc": rc})
                    status = 1
                    self._stop.set()
                    break
                self.restarts[s] += 1
                delay = min(0.5 * 2 ** self.restarts[s], 10.0)
                log.warning("restarting", extra={"event": "child_exited", "child": s, "rc": rc, "delay_s": delay})
                time.sleep(delay)
                self.spawn(s)
        self.shutdown()
        return status

    def shutdown(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.server.drain_seconds + self.config.server.grace_seconds + 10
        for s, proc in self.procs.items():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.error("killing", extra={"event": "child_killed", "child": s})
                proc.kill()
                proc.wait()
        self._dir.cleanup()


def serve_all(config: ServeConfig) -> int:
    setup_logging(config, "supervisor")
    return Supervisor(config).run()
