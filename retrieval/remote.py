"""gRPC glue for DBR callers that live elsewhere: build DBR through a remote retrieval service, and
tell a running tagger service to load a promoted model.

Kept out of ``retrieval/dbr.py`` and ``retrieval/retrain.py`` so those stay importable (and
testable) without grpc; both functions below plug into :class:`retrieval.retrain.Retrainer` as its
``dbr_source`` and ``notifier``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrieval.dbr import DbrParams, DbrSet, load_cached
from vaner.errors import (
    AlreadyRunning,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    VanerError,
)
from vaner.progress import ProgressCallback
from vaner.progress_proto import progress_from_proto
from vaner.settings import Settings

TAGGER_ADDRESS_ENV = "VANER_TAGGER_ADDRESS"
RETRIEVAL_ADDRESS_ENV = "VANER_RETRIEVAL_ADDRESS"


def _channel(address: str):
    import grpc

    return grpc.insecure_channel(address)


def _unavailable(what: str, address: str, exc: Exception) -> VanerError:
    import grpc

    if isinstance(exc, grpc.RpcError):
        code = exc.code()  # type: ignore[attr-defined]
        detail = exc.details()  # type: ignore[attr-defined]
        if code == grpc.StatusCode.UNAVAILABLE:
            return Unavailable(f"{what} at {address} is unreachable: {detail}")
        # the remote side's domain error comes back as the same domain error (same exit code)
        for cls in (NotFound, InvalidArgument, FailedPrecondition, AlreadyRunning, ResourceExhausted,
                    Unauthenticated):
            if cls.code == code.name:
                return cls(f"{what} at {address}: {detail}")
        err = VanerError(f"{what} at {address} failed: {code.name}: {detail}")
        err.code = code.name
        return err
    return Unavailable(f"{what} at {address}: {exc}")


def notify_tagger(address: str, version: str, timeout: float = 600.0) -> str:
    """Ask the tagger service to LoadModel ``version``; the service swaps without dropping requests."""
    from vaner.v1 import tagger_pb2, tagger_pb2_grpc

    with _channel(address) as channel:
        stub = tagger_pb2_grpc.TaggerStub(channel)
        try:
            reply = stub.LoadModel(tagger_pb2.LoadModelRequest(version=version), timeout=timeout)
        except Exception as exc:
            raise _unavailable("tagger service", address, exc) from exc
    return reply.id


def tagger_notifier(address: str | None):
    """A Retrainer notifier for ``--tagger-address`` / ``$VANER_TAGGER_ADDRESS``, or None."""
    address = address or os.environ.get(TAGGER_ADDRESS_ENV)
    if not address:
        return None
    return lambda version: notify_tagger(address, version)


def build_dbr_remote(address: str, settings: Settings, datasets: Sequence[str], params: DbrParams,
                     snapshot: str, data_dir: str | None, progress: ProgressCallback | None = None,
                     timeout: float | None = None) -> DbrSet:
    """Run BuildDbrSamples on a retrieval service and return the set it wrote.

    The JSONL lives on the server's disk (``DbrSet.path``); a tagger that shares the state volume
    (compose/Kubernetes mount one VANER_HOME) reads it from there.
    """
    from vaner.v1 import retrieval_pb2, retrieval_pb2_grpc

    mode = retrieval_pb2.RANDOM if params.mode == "random" else retrieval_pb2.RETRIEVED
    req = retrieval_pb2.BuildDbrRequest(snapshot=snapshot, datasets=list(datasets), data_dir=data_dir or "",
                                        mode=mode, seed=params.seed, max_positive=params.max_positive,
                                        max_negative=params.max_negative, top_k=params.top_k)
    done: Any = None
    with _channel(address) as channel:
        stub = retrieval_pb2_grpc.RetrievalStub(channel)
        try:
            for ev in stub.BuildDbrSamples(req, timeout=timeout):
                if ev.HasField("progress") and progress:
                    progress(progress_from_proto(ev.progress))
                elif ev.HasField("done"):
                    done = ev.done
        except Exception as exc:
            raise _unavailable("retrieval service", address, exc) from exc
    if done is None:
        raise Unavailable(f"retrieval service at {address} ended BuildDbrSamples without a result")
    local = load_cached(settings, done.id)
    if local is not None:
        return local
    path = Path(done.path)
    if (path / "sentences.jsonl").exists():
        manifest = json.loads((path / "manifest.json").read_text())
        return DbrSet(done.id, path, int(done.sentences), done.snapshot, json.loads(done.params_json or "{}"),
                      manifest, cached=True)
    raise Unavailable(f"DBR set {done.id} was built at {done.path} on the retrieval service, which this "
                      "process cannot read; share VANER_HOME between the services")


def remote_dbr_source(address: str | None, settings: Settings):
    """A Retrainer ``dbr_source`` that builds over gRPC when an address is configured, else None."""
    address = address or os.environ.get(RETRIEVAL_ADDRESS_ENV)
    if not address:
        return None

    def source(datasets, params, snapshot, data_dir, progress):
        return build_dbr_remote(address, settings, datasets, params, snapshot, data_dir, progress)

    return source
