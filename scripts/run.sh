#!/usr/bin/env bash
# The main job on the embedded default (SQLite + in-process Qdrant under $VANER_HOME):
# build a KB snapshot from the benchmark datasets' training splits (no UMLS licence needed; skipped
# when a snapshot already exists), then extract and link entities in an example abstract with the
# bundled default model. Pass your own text file as $1.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export VANER_HOME=${VANER_HOME:-$HOME/.local/share/vaner}
DATA=${VANER_DATA_DIR:-../shared/data/bioner}
if ! .venv/bin/kb-ingest snapshots --json | grep -q '"latest": true'; then
  for spec in ncbi:Disease bc5cdr-disease:Disease bc5cdr-chem:Chemical bc2gm:Gene jnlpba:Gene linnaeus:Species s800:Species; do
    name=${spec%%:*}; type=${spec##*:}
    .venv/bin/kb-ingest dataset "$DATA/$name/train.tsv" --type "$type" --json
  done
fi
.venv/bin/vaner extract --input "${1:-examples/abstract.txt}" --link --format json
