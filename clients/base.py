"""What the three clients share: the channel (TLS, token, message sizes), deadlines, retries with
exponential backoff on UNAVAILABLE, and turning a gRPC status back into a vaner domain error.

Only UNAVAILABLE is retried, because it is the one status that says "the request never reached a
working server" (restart, rolling update, not yet listening). Streams are retried only until their
first message arrives: after that, replaying could repeat side effects such as an ingest.
Statuses come back as the same :class:`VanerError` subclasses the server raised (NotFound,
InvalidArgument, ...), so callers catch domain errors, not grpc ones.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from vaner import errors as E

ServiceError = E.ServiceError  # re-exported: a status with no closer domain error


def remote_error(exc: grpc.RpcError, service: str, address: str) -> E.VanerError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN  # type: ignore[union-attr]
    details = (exc.details() if hasattr(exc, "details") else str(exc)) or code.name  # type: ignore[union-attr]
    err = E.error_for_status(code.name, f"{service} service at {address}: {details}")
    err.status = code  # type: ignore[attr-defined]
    return err


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 3.0
    multiplier: float = 2.0

    def delays(self) -> Iterator[float]:
        """Full-jitter exponential backoff, so restarted servers are not hit by synchronised waves."""
        delay = self.initial_backoff
        for _ in range(self.max_attempts - 1):
            yield random.uniform(0, delay)
            delay = min(delay * self.multiplier, self.max_backoff)


@dataclass(frozen=True)
class ClientOptions:
    token: str | None = field(default=None, metadata={"help": "bearer token"})
    token_file: str | None = field(default=None, metadata={"help": "file holding the bearer token"})
    tls: bool = field(default=False, metadata={"help": "use TLS (implied by tls_ca)"})
    tls_ca: str | None = field(default=None, metadata={"help": "PEM CA that signed the server certificate"})
    tls_cert: str | None = field(default=None, metadata={"help": "client certificate, for mTLS"})
    tls_key: str | None = field(default=None, metadata={"help": "client key, for mTLS"})
    server_name: str | None = field(default=None, metadata={"help": "expected name in the server certificate"})
    timeout: float | None = field(default=None, metadata={"help": "default deadline in seconds for every call"})
    deadlines: dict = field(default_factory=dict, metadata={"help": "per-RPC deadlines, e.g. {'Extract': 60}"})
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_message_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_env(cls, **kwargs: Any) -> ClientOptions:
        """Options where ``VANER_CLIENT_TOKEN_FILE`` and ``VANER_CLIENT_TLS_CA`` fill what is not
        given (None), so tools that only take an address (``vaner extract --remote``, ``vaner
        retrain --tagger-address``) reach a secured stack."""
        for key, env in (("token_file", "VANER_CLIENT_TOKEN_FILE"), ("tls_ca", "VANER_CLIENT_TLS_CA")):
            if kwargs.get(key) is None and os.environ.get(env):
                kwargs[key] = os.environ[env]
        return cls(**{k: v for k, v in kwargs.items() if v is not None})

    def bearer(self) -> str | None:
        if self.token:
            return self.token
        if self.token_file:
            return Path(self.token_file).read_text().strip() or None
        return None


# Seconds per RPC when neither the call nor the options say; also the defaults of a stack's
# ``[deadlines]`` table (services/config.py), so clients and servers agree.
DEFAULT_DEADLINES: dict[str, float] = {"default": 30.0, "Extract": 120.0, "ExtractStream": 3600.0, "Retrain": 24 * 3600.0,
                     "Ingest": 24 * 3600.0, "BuildDbrSamples": 6 * 3600.0, "LoadModel": 300.0, "Search": 60.0,
                     "Retrieve": 120.0}


class BaseClient:
    service = "vaner"

    def __init__(self, address: str, options: ClientOptions | None = None, **kwargs: Any):
        self.address = address
        self.options = options or ClientOptions.from_env(**kwargs)
        o = self.options
        chan_opts = [("grpc.max_receive_message_length", o.max_message_bytes),
                     ("grpc.max_send_message_length", o.max_message_bytes)]
        if o.server_name:
            chan_opts.append(("grpc.ssl_target_name_override", o.server_name))
        if o.tls or o.tls_ca:
            creds = grpc.ssl_channel_credentials(
                root_certificates=Path(o.tls_ca).read_bytes() if o.tls_ca else None,
                private_key=Path(o.tls_key).read_bytes() if o.tls_key else None,
                certificate_chain=Path(o.tls_cert).read_bytes() if o.tls_cert else None)
            self.channel = grpc.secure_channel(address, creds, options=chan_opts)
        else:
            self.channel = grpc.insecure_channel(address, options=chan_opts)
        token = o.bearer()
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    # ---- plumbing -----------------------------------------------------------------------------
    def deadline(self, rpc: str, timeout: float | None = None) -> float:
        if timeout is not None:
            return timeout
        if rpc in self.options.deadlines:
            return float(self.options.deadlines[rpc])
        if self.options.timeout is not None:
            return self.options.timeout
        if "default" in self.options.deadlines:
            return float(self.options.deadlines["default"])
        return DEFAULT_DEADLINES.get(rpc, DEFAULT_DEADLINES["default"])

    def _error(self, exc: grpc.RpcError) -> E.VanerError:
        return remote_error(exc, self.service, self.address)

    def _unary(self, method: Callable, request: Any, rpc: str, timeout: float | None = None) -> Any:
        end = time.monotonic() + self.deadline(rpc, timeout)
        delays = self.options.retry.delays()
        while True:
            try:
                return method(request, timeout=max(end - time.monotonic(), 0.001), metadata=self._metadata)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                    raise self._error(exc) from None
                delay = next(delays, None)
                if delay is None or time.monotonic() + delay >= end:
                    raise self._error(exc) from None
                time.sleep(delay)

    def _stream(self, method: Callable, request: Any, rpc: str, timeout: float | None = None) -> Iterator[Any]:
        """Server-streaming call; retried on UNAVAILABLE only before the first message."""
        end = time.monotonic() + self.deadline(rpc, timeout)
        delays = self.options.retry.delays()
        while True:
            started = False
            try:
                for item in method(request, timeout=max(end - time.monotonic(), 0.001), metadata=self._metadata):
                    started = True
                    yield item
                return
            except grpc.RpcError as exc:
                if started or exc.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                    raise self._error(exc) from None
                delay = next(delays, None)
                if delay is None or time.monotonic() + delay >= end:
                    raise self._error(exc) from None
                time.sleep(delay)

    def _outcome(self, events: Iterable[Any], result_type: type, rpc: str,
                 on_progress: Callable[[Any], None] | None) -> Any:
        """Run a progress-then-result stream to its end: progress goes to ``on_progress``, the one
        ``result_type`` item is returned; a stream that ends without it is Unavailable."""
        result = None
        for ev in events:
            if isinstance(ev, result_type):
                result = ev
            elif on_progress is not None:
                on_progress(ev)
        if result is None:
            raise E.Unavailable(f"{self.service} service at {self.address} ended {rpc} without a result")
        return result

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the channel connects (a service just started); Unavailable otherwise."""
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as exc:
            raise E.Unavailable(f"{self.service} service at {self.address} not reachable within {timeout}s") from exc

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):  # noqa: ANN204
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
