"""Building and running one vaner gRPC service process, and supervising the three of them.

Every service gets the same frame: the error-mapping interceptor (plus the token check when a
token is configured), standard ``grpc.health.v1`` health checking, server reflection, message
size limits, JSON-lines logs, and a SIGTERM/SIGINT handler that first reports NOT_SERVING (so load
balancers stop sending) and then stops with a grace period in which in-flight calls finish.

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
from grpc_reflection.v1alpha import reflection

from services.config import SERVICES, ServeConfig
from services.interceptors import ErrorMappingInterceptor, TokenAuthInterceptor
from vaner import __version__
from vaner.errors import InvalidArgument

log = logging.getLogger("vaner.services")

SERVICE_NAMES = {"kb": "vaner.v1.KnowledgeBase", "retrieval": "vaner.v1.Retrieval", "tagger": "vaner.v1.Tagger"}
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
class Running:
    """A started service: its server, bound port, health servicer and what to close on stop."""

    service: str
    server: grpc.Server
    port: int
    health: health.HealthServicer
    closers: list[Callable[[], None]] = field(default_factory=list)

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight calls finish within ``grace``."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        for close in self.closers:
            try:
                close()
            except Exception:  # noqa: BLE001 - shutdown continues
                log.exception("error while closing %s", self.service)


def server_credentials(config: ServeConfig) -> grpc.ServerCredentials | None:
    sec = config.security
    if not sec.tls:
        return None
    key, cert = Path(sec.tls_key).read_bytes(), Path(sec.tls_cert).read_bytes()
    ca = Path(sec.tls_client_ca).read_bytes() if sec.tls_client_ca else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def build_server(config: ServeConfig) -> grpc.Server:
    interceptors: list[grpc.ServerInterceptor] = []
    token = config.security.token()
    if token:
        interceptors.append(TokenAuthInterceptor(token))
    interceptors.append(ErrorMappingInterceptor())
    options = [("grpc.max_receive_message_length", config.server.max_receive_message_bytes),
               ("grpc.max_send_message_length", config.server.max_send_message_bytes),
               ("grpc.so_reuseport", 0)]
    return grpc.server(futures.ThreadPoolExecutor(max_workers=config.server.max_workers, thread_name_prefix="rpc"),
                       interceptors=interceptors, options=options,
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


def _add_kb(server: grpc.Server, config: ServeConfig) -> list[Callable[[], None]]:
    from kb_ingest.kb import KnowledgeBase
    from services.kb_servicer import KnowledgeBaseServicer
    from vaner.v1 import kb_pb2_grpc

    kb = KnowledgeBase(config.settings())
    kb_pb2_grpc.add_KnowledgeBaseServicer_to_server(KnowledgeBaseServicer(kb), server)
    close = getattr(kb, "close", None)
    return [close] if close else []


def _add_retrieval(server: grpc.Server, config: ServeConfig) -> list[Callable[[], None]]:
    from services.retrieval_servicer import RetrievalServicer
    from vaner.v1 import retrieval_pb2_grpc

    kb = None
    if config.retrieval.kb_address:
        from clients.kb import KnowledgeBaseClient

        kb = RemoteKnowledgeBase(KnowledgeBaseClient(config.retrieval.kb_address,
                                                     **client_options_for_siblings(config)))
    retrieval_pb2_grpc.add_RetrievalServicer_to_server(RetrievalServicer(config.settings(), kb), server)
    return []


def _add_tagger(server: grpc.Server, config: ServeConfig) -> list[Callable[[], None]]:
    from clients.base import ClientOptions
    from retrieval.remote import service_retrainer
    from services.tagger_servicer import TaggerServicer
    from tagger.serving import Limits, TaggerCore
    from vaner.v1 import tagger_pb2_grpc

    t = config.tagger
    settings = config.settings()
    siblings = ClientOptions(**client_options_for_siblings(config))

    def retrain(request: Any, progress: Callable) -> Any:
        retrainer = service_retrainer(settings, retrieval_address=t.retrieval_address, kb_address=t.kb_address,
                                      options=siblings)
        return retrainer.run(request, progress=progress)

    core = TaggerCore(settings, model_ref=t.model, device=t.device, batch_size=t.batch_size, threads=t.threads,
                      limits=Limits(t.max_documents, t.max_text_chars), retrain_fn=retrain)
    core.start()
    tagger_pb2_grpc.add_TaggerServicer_to_server(TaggerServicer(core), server)
    return [core.close]


class RemoteKnowledgeBase:
    """What the retrieval core needs from a KB, answered by the KB service over gRPC, for a
    retrieval service that does not share the KB's state volume. Queries are encoded here with the
    snapshot's recorded encoder and searched by vector, as the in-process path does."""

    def __init__(self, client: Any):
        self.client = client
        self._encoders: dict[str, Any] = {}

    def get_snapshot(self, ref: str = "latest") -> Any:
        return self.client.get_snapshot(ref)

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


BUILDERS: dict[str, Callable[[grpc.Server, ServeConfig], list[Callable[[], None]]]] = {
    "kb": _add_kb, "retrieval": _add_retrieval, "tagger": _add_tagger}


def start_service(service: str, config: ServeConfig, port: int | None = None,
                  builders: dict[str, Callable] | None = None) -> Running:
    """Build, bind and start one service. ``port`` 0 picks a free port (tests)."""
    if service not in SERVICES:
        raise InvalidArgument(f"unknown service {service!r}; expected one of {', '.join(SERVICES)} or all")
    server = build_server(config)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    full_name = SERVICE_NAMES[service]
    health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_servicer.set(full_name, health_pb2.HealthCheckResponse.NOT_SERVING)
    closers = (builders or BUILDERS)[service](server, config)
    reflection.enable_server_reflection((full_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
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
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(full_name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", extra={"event": "serving", "service": service, "address": f"{config.server.host}:{bound}",
                                "port": bound, "tls": creds is not None, "auth": bool(config.security.token_file),
                                "pid": os.getpid(), "version": __version__})
    return Running(service, server, bound, health_servicer, closers)


def serve_one(service: str, config: ServeConfig, port: int | None = None) -> int:
    """Run one service in the foreground until SIGTERM/SIGINT."""
    setup_logging(config, service)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop.set())
    running = start_service(service, config, port)
    stop.wait()
    log.info("shutting down", extra={"event": "stopping", "grace_s": config.server.grace_seconds})
    running.stop(config.server.grace_seconds)
    log.info("stopped", extra={"event": "stopped"})
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
        deadline = time.monotonic() + self.config.server.grace_seconds + 10
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
