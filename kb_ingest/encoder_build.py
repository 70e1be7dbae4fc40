"""Encoders vaner derives offline from the local MiniLM, and the folder layout every stored encoder has.

Issue 8's speed candidates: the same all-MiniLM-L6-v2 exported to ONNX Runtime (fp32, and int8 by
dynamic quantisation) and a model2vec static model distilled from it (a term's vector is a mean of
token vectors: no transformer at encode time). Each is built once, without network, into
``$VANER_HOME/encoders/<name>/`` with a ``vaner_encoder.json`` manifest holding its provenance (base
model, its version and checksum, tool versions, parameters, the files' sha256). A build writes into
a temporary folder and renames it, under a file lock, so two processes never see half a model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from kb_ingest.encoder import (
    DEFAULT_ENCODER,
    check_encoder_name,
    combined_sha256,
    encoders_root,
    files_sha256,
    minilm_version,
)
from kb_ingest.encoder_backends import MANIFEST, MODEL2VEC, ONNX, ONNX_FILE, st_pooling
from vaner.errors import FailedPrecondition, InvalidArgument
from vaner.locks import file_lock
from vaner.permissions import make_private_dir

log = logging.getLogger(__name__)

M2V_PCA_DIMS = 256  # model2vec's default; 384 -> 256 keeps most variance and a third less payload


@dataclass(frozen=True)
class Candidate:
    name: str
    backend: str
    description: str
    build: Callable[[Path, Path], dict]  # (base model folder, output folder) -> parameters recorded


def _tool_versions(*packages: str) -> dict[str, str]:
    out = {}
    for p in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[p] = metadata.version(p)
    return out


def export_onnx(src: Path, out: Path, *, quantize: bool = False, opset: int = 17) -> dict:
    """Export a BERT-style sentence-transformers folder to ONNX (last hidden state; pooling is done
    by the runtime), optionally with int8 dynamic quantisation of the weights."""
    import torch
    from transformers import AutoModel

    class _Hidden(torch.nn.Module):  # keyword inputs only: BERT's forward has positional extras
        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN201
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    model = AutoModel.from_pretrained(str(src), local_files_only=True).eval()
    ids = torch.ones(2, 8, dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    fp32 = out / ("model_fp32.onnx" if quantize else ONNX_FILE)
    with torch.no_grad():
        torch.onnx.export(_Hidden(model), (ids, ids, torch.zeros_like(ids)), str(fp32),
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], opset_version=opset, dynamo=False,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                                        "last_hidden_state": axes})
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(out / ONNX_FILE), weight_type=QuantType.QInt8)
        fp32.unlink()
    shutil.copy2(src / "tokenizer.json", out / "tokenizer.json")
    seq = 256
    cfg = src / "sentence_bert_config.json"
    if cfg.is_file():
        seq = int(json.loads(cfg.read_text(encoding="utf-8")).get("max_seq_length") or seq)
    return {"opset": opset, "quantization": "int8-dynamic" if quantize else "none", "pooling": st_pooling(src),
            "max_seq_length": seq, "tools": _tool_versions("torch", "onnx", "onnxruntime", "transformers")}


def distil_model2vec(src: Path, out: Path, *, pca_dims: int | None = M2V_PCA_DIMS) -> dict:
    """model2vec's offline distillation: every vocabulary token through the transformer once, PCA,
    SIF weighting (about a minute and a half for MiniLM on two shared cores)."""
    from model2vec.distill import distill

    static = distill(str(src), device="cpu", pca_dims=pca_dims)
    static.save_pretrained(str(out))
    return {"pca_dims": pca_dims, "vocabulary": len(static.tokens), "tools": _tool_versions("model2vec", "torch",
                                                                                             "transformers")}


def _minilm() -> Path:
    from kb_ingest.encoder import ALIASES

    return Path(ALIASES["minilm"]())  # type: ignore[operator]


CANDIDATES: dict[str, Candidate] = {c.name: c for c in (
    Candidate("minilm-onnx", ONNX, "all-MiniLM-L6-v2 exported to ONNX Runtime, fp32",
              lambda src, out: export_onnx(src, out)),
    Candidate("minilm-onnx-int8", ONNX, "all-MiniLM-L6-v2 in ONNX Runtime with int8 dynamically quantised weights",
              lambda src, out: export_onnx(src, out, quantize=True)),
    Candidate("minilm-m2v", MODEL2VEC, f"model2vec static embeddings distilled from all-MiniLM-L6-v2 "
              f"(PCA {M2V_PCA_DIMS})", lambda src, out: distil_model2vec(src, out)),
)}


def write_manifest(folder: Path, **fields: object) -> dict:
    """``vaner_encoder.json``: the provenance of a stored encoder, with the sha256 of its files."""
    files = files_sha256(folder)
    files.pop(MANIFEST, None)
    manifest = {**fields, "files": files, "sha256": combined_sha256(files)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    return manifest


@contextlib.contextmanager
def staging(root: Path, name: str) -> Iterator[Path]:
    """A temporary folder that becomes ``root/name`` by one rename when the block succeeds."""
    check_encoder_name(name)
    make_private_dir(root)
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        final = root / name
        if final.exists():
            raise FailedPrecondition(f"encoder folder {final} already exists")
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_lock(root: Path, name: str) -> contextlib.AbstractContextManager:
    """Waits while another process builds the same model."""
    return file_lock(root / f".{name}.lock", label=f"build of encoder {name}", wait=True)


def ensure_candidate(name: str, home: Path | str | None = None) -> Path:
    """The folder of a derived candidate, built now (offline, logged) when it is not there yet."""
    cand = CANDIDATES.get(name)
    if cand is None:
        raise InvalidArgument(f"unknown candidate encoder {name!r}; candidates: {', '.join(sorted(CANDIDATES))}")
    root = encoders_root(home)
    final = root / name
    if (final / MANIFEST).is_file():
        return final
    with build_lock(root, name):
        if (final / MANIFEST).is_file():
            return final
        src = _minilm()
        log.warning("building encoder %s from %s (one time, offline): %s", name, src, cand.description)
        t0 = time.perf_counter()
        with staging(root, name) as tmp:
            params = cand.build(src, tmp)
            base_files = files_sha256(src)
            write_manifest(tmp, name=name, backend=cand.backend, description=cand.description,
                           version="1", base={"name": DEFAULT_ENCODER, "version": minilm_version(),
                                              "sha256": combined_sha256(base_files)},
                           pooling=params.pop("pooling", "mean"), max_seq_length=params.pop("max_seq_length", None),
                           parameters=params, build_seconds=round(time.perf_counter() - t0, 1),
                           created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        log.warning("encoder %s built in %.0f s under %s", name, time.perf_counter() - t0, final)
    return final
