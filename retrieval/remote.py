"""Retrain collaborators that live in other processes: DBR built by a Retrieval service, snapshots
resolved by a KB service, and a tagger service told to load a promoted model.

They plug into :class:`retrieval.retrain.Retrainer` as its ``dbr_source``, ``kb`` and
``notifier``, and speak through the typed clients in ``clients/``, so they get the stack's token,
TLS, deadlines, retries and status-to-error mapping like every other caller. Kept out of
``retrieval/dbr.py`` and ``retrieval/retrain.py`` so those stay importable without grpc.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from retrieval.dbr import DbrParams, DbrSet, load_cached
from vaner.errors import Unavailable, VanerError
from vaner.progress import ProgressCallback
from vaner.settings import Settings

TAGGER_ADDRESS_ENV = "VANER_TAGGER_ADDRESS"
RETRIEVAL_ADDRESS_ENV = "VANER_RETRIEVAL_ADDRESS"


def notify_tagger(address: str, version: str, timeout: float = 600.0, options: Any = None) -> str:
    """Ask the tagger service to LoadModel ``version``; the service swaps without dropping requests.
    ``options`` is a :class:`clients.ClientOptions` (default: from ``VANER_CLIENT_*``)."""
    from clients.tagger import TaggerClient

    with TaggerClient(address, options) as client:
        return client.load_model(version, timeout=timeout).id


def tagger_notifier(address: str | None, options: Any = None) -> Callable[[str], str] | None:
    """A Retrainer notifier for ``--tagger-address`` / ``$VANER_TAGGER_ADDRESS``, or None. Its
    failure says what it means (the registry moved, the tagger did not) and what to do about it."""
    address = address or os.environ.get(TAGGER_ADDRESS_ENV)
    if not address:
        return None

    def notify(version: str) -> str:
        try:
            return notify_tagger(address, version, options=options)
        except Exception as exc:
            reason = exc.message if isinstance(exc, VanerError) else f"{type(exc).__name__}: {exc}"
            advice = (f"model {version} is promoted to latest in the registry, but the tagger at {address} did not "
                      f"load it ({reason}). A tagger serving 'latest' switches on its own within its "
                      "tagger.reconcile_seconds; otherwise check the address and credentials (--token-file, "
                      f"--tls-ca, --tls-server-name) and call Tagger.LoadModel with version {version}, or "
                      "restart the tagger")
            raise (type(exc)(advice) if isinstance(exc, VanerError) else Unavailable(advice)) from exc

    return notify


def build_dbr_remote(address: str, settings: Settings, datasets: Sequence[str], params: DbrParams,
                     snapshot: str, data_dir: str | None, progress: ProgressCallback | None = None,
                     timeout: float | None = None, options: Any = None) -> DbrSet:
    """Run BuildDbrSamples on a retrieval service and return the set it wrote.

    The JSONL lives on the server's disk (``DbrSet.path``); a process that shares the state volume
    (compose/Kubernetes mount one VANER_HOME) reads it from there.
    """
    from clients.retrieval import RetrievalClient

    with RetrievalClient(address, options) as client:
        done = client.build_dbr(list(datasets), snapshot=snapshot, mode=params.mode, data_dir=data_dir or "",
                                seed=params.seed, max_positive=params.max_positive,
                                max_negative=params.max_negative, top_k=params.top_k,
                                corpus_agreement=params.corpus_agreement, max_uses=params.max_uses, timeout=timeout,
                                on_progress=progress)
    local = load_cached(settings, done.id)
    if local is not None:
        return local
    path = Path(done.path)
    if (path / "sentences.jsonl").exists():
        manifest = json.loads((path / "manifest.json").read_text())
        return DbrSet(done.id, path, int(done.sentences), done.snapshot, dict(done.params), manifest, cached=True)
    raise Unavailable(f"DBR set {done.id} was built at {done.path} on the retrieval service, which this "
                      "process cannot read; share VANER_HOME between the services")


def remote_dbr_source(address: str | None, settings: Settings, options: Any = None) -> Callable[..., DbrSet] | None:
    """A Retrainer ``dbr_source`` that builds over gRPC when an address is configured, else None."""
    address = address or os.environ.get(RETRIEVAL_ADDRESS_ENV)
    if not address:
        return None

    def source(datasets, params, snapshot, data_dir, progress):  # noqa: ANN001, ANN202
        return build_dbr_remote(address, settings, datasets, params, snapshot, data_dir, progress, options=options)

    return source


def service_retrainer(settings: Settings, *, retrieval_address: str = "", kb_address: str = "",
                      options: Any = None) -> Any:
    """The :class:`Retrainer` a tagger service runs: DBR from the Retrieval service and snapshots
    from the KB service when their addresses are configured, so the tagger process never opens the
    vector store another process owns; in-process otherwise."""
    from retrieval.retrain import Retrainer

    kb = None
    if kb_address:
        from clients.kb import KnowledgeBaseClient

        kb = KnowledgeBaseClient(kb_address, options)
    dbr_source = remote_dbr_source(retrieval_address, settings, options) if retrieval_address else None
    return Retrainer(settings, kb=kb, dbr_source=dbr_source)
