"""The runtimes behind :class:`kb_ingest.encoder.Encoder`, one per on-disk model format.

Every runtime exposes the one method the encoder calls, ``encode(texts, batch_size=...)`` returning
an array of shape (n, dimension), so a sentence-transformers model, an ONNX Runtime session and a
model2vec static table are interchangeable behind one :class:`Encoder` (the KB, retrieval and the
benchmarks never ask which one they hold). Which format a directory holds is decided by
:func:`detect_backend`; heavy libraries are imported only when that format is loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from vaner.errors import InvalidArgument

SENTENCE_TRANSFORMERS = "sentence-transformers"
ONNX = "onnx"
MODEL2VEC = "model2vec"
BACKENDS = (SENTENCE_TRANSFORMERS, ONNX, MODEL2VEC)
MANIFEST = "vaner_encoder.json"  # written by vaner for every encoder it builds (provenance, backend)
ONNX_FILE = "model.onnx"


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"{path}: not a readable encoder manifest ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{path}: expected a JSON object")
    return data


def detect_backend(directory: Path) -> str:
    """The manifest's word when vaner built the model; otherwise the files decide. A model2vec
    folder also carries a sentence-transformers ``modules.json``, so its config is checked first."""
    directory = Path(directory)
    backend = read_manifest(directory).get("backend")
    if backend:
        if backend not in BACKENDS:
            raise InvalidArgument(f"{directory / MANIFEST}: unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
        return str(backend)
    config = directory / "config.json"
    if config.is_file():
        try:
            if json.loads(config.read_text(encoding="utf-8")).get("model_type") == "model2vec":
                return MODEL2VEC
        except (OSError, ValueError):
            pass
    if (directory / ONNX_FILE).is_file():
        return ONNX
    return SENTENCE_TRANSFORMERS


def _threads() -> int:
    """ONNX Runtime's thread pool follows OMP_NUM_THREADS like torch does (0 = all cores)."""
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


class OnnxModel:
    """A transformer exported to ONNX: tokenizers + ONNX Runtime + pooling, no torch at run time."""

    def __init__(self, directory: Path, *, file: str = ONNX_FILE, pooling: str = "mean", max_length: int = 256):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        directory = Path(directory)
        if pooling not in ("mean", "cls"):
            raise InvalidArgument(f"{directory}: ONNX pooling must be mean or cls, got {pooling!r}")
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length)
        pad_token = (self.tokenizer.padding or {}).get("pad_token", "[PAD]")
        pad_id = self.tokenizer.token_to_id(pad_token)
        # the exported tokenizer.json pads to a fixed 128; per-batch padding is what makes short terms cheap
        self.tokenizer.enable_padding(pad_id=pad_id if pad_id is not None else 0, pad_token=pad_token)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = _threads()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(directory / file), opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.pooling = pooling
        self.max_length = max_length
        self.dimension = int(self.encode(["x"]).shape[1])

    def encode(self, texts: list[str], batch_size: int = 256, **_: object) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per batch
        out: np.ndarray | None = None
        for start in range(0, len(order), max(1, batch_size)):
            idx = order[start:start + batch_size]
            encs = self.tokenizer.encode_batch([texts[i] for i in idx])
            ids = np.asarray([e.ids for e in encs], dtype=np.int64)
            mask = np.asarray([e.attention_mask for e in encs], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            hidden = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})[0]
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                m = mask[:, :, None].astype(np.float32)
                pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
            if out is None:
                out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            out[idx] = pooled
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)


class Model2VecModel:
    """A model2vec static embedding table: a term's vector is the mean of its token vectors."""

    def __init__(self, directory: Path, *, max_length: int | None = None):
        from model2vec import StaticModel as M2V

        self.model = M2V.from_pretrained(str(directory), force_download=False)  # a local folder: no hub call
        if max_length is not None:
            self.model.max_length = max_length
        self.max_length = self.model.max_length
        self.dimension = int(self.model.dim)

    def encode(self, texts: list[str], batch_size: int = 1024, **_: object) -> np.ndarray:
        # no multiprocessing: inside a gRPC server or next to a training job, one thread is the polite choice
        return np.asarray(self.model.encode(list(texts), batch_size=max(1, batch_size), use_multiprocessing=False),
                          dtype=np.float32)


def load_sentence_transformer(local: Path, device: str, max_length: int | None) -> tuple[object, str, int | None]:
    """(model, pooling, max_seq_length). A folder without ``modules.json`` is a plain transformers
    model (SapBERT's layout), wrapped with CLS pooling because SapBERT was trained on [CLS]."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a weight-loading bar per load would drown the ingest bar
    if not (local / "modules.json").exists():
        from sentence_transformers.sentence_transformer import modules

        word = modules.Transformer(str(local))
        pool = modules.Pooling(word.get_embedding_dimension(), pooling_mode="cls")
        model, pooling = SentenceTransformer(modules=[word, pool], device=device), "cls"
    else:
        model, pooling = SentenceTransformer(str(local), device=device, local_files_only=True), "model"
    if max_length is not None:
        model.max_seq_length = max_length
    return model, pooling, getattr(model, "max_seq_length", None)


def st_pooling(directory: Path) -> str:
    """mean or cls, read from a sentence-transformers folder's pooling config (cls without one)."""
    for sub in sorted(Path(directory).glob("*_Pooling/config.json")):
        cfg = json.loads(sub.read_text(encoding="utf-8"))
        return "cls" if cfg.get("pooling_mode_cls_token") else "mean"
    return "cls"
