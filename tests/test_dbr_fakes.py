"""Small in-test stand-ins for the KB, trainer and registry, so DBR/retrain tests stay fast and do
not depend on the real encoder or backbone (their own tests cover those). No tests here."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vaner.categories import Category
from vaner.errors import NotFound

D, C, G, S = Category.DISEASE, Category.CHEMICAL, Category.GENE, Category.SPECIES

KB_ENTRIES = [
    ("C1", "breast cancer", (D,)), ("C2", "ovarian cancer", (D,)), ("C3", "colorectal cancer", (D,)),
    ("C4", "adenomatous polyposis coli", (D, G)), ("C5", "myotonic dystrophy", (D,)),
    ("C6", "BRCA1", (G,)), ("C7", "APC", (G,)), ("C8", "tumour suppressor protein", (G,)),
    ("C9", "aspirin", (C,)), ("C10", "cisplatin", (C,)), ("C11", "Homo sapiens", (S,)),
    ("C12", "human", (S,)), ("C13", "mouse", (S,)), ("C14", "Staphylococcus aureus", (S,)),
    ("C15", "Escherichia coli", (S,)), ("C16", "methane", (C,)), ("C17", "archaeon", (S,)),
    ("C18", "sludge", (C,)), ("C19", "Wilms tumor", (D,)), ("C20", "glucose", (C,)),
]

NCBI_TRAIN = """Identification\tO
of\tO
APC2\tO
,\tO
a\tO
homologue\tO
of\tO
the\tO
adenomatous\tB-Disease
polyposis\tI-Disease
coli\tI-Disease
tumour\tI-Disease
suppressor\tO
.\tO

Mutations\tO
in\tO
BRCA1\tO
cause\tO
familial\tO
breast\tB-Disease
cancer\tI-Disease
and\tO
ovarian\tB-Disease
cancer\tI-Disease
.\tO

Patients\tO
with\tO
myotonic\tB-Disease
dystrophy\tI-Disease
(\tI-Disease
DM\tI-Disease
)\tI-Disease
were\tO
studied\tO
.\tO

The\tO
the\tO
of\tO
.\tO
"""

S800_TRAIN = """Methanoregula\tB-Species
formicica\tI-Species
sp\tO
.\tO
,\tO
a\tO
methane\tO
-\tO
producing\tO
archaeon\tO
isolated\tO
from\tO
methanogenic\tO
sludge\tO
.\tO

Growth\tO
of\tO
S\tB-Species
.\tI-Species
aureus\tI-Species
in\tO
human\tB-Species
serum\tO
.\tO
"""


def write_data_dir(root: Path) -> Path:
    (root / "ncbi").mkdir(parents=True, exist_ok=True)
    (root / "s800").mkdir(parents=True, exist_ok=True)
    (root / "ncbi" / "train.tsv").write_text(NCBI_TRAIN)
    (root / "s800" / "train.tsv").write_text(S800_TRAIN)
    for name in ("ncbi", "s800"):
        (root / name / "dev.tsv").write_text((root / name / "train.tsv").read_text())
    return root


@dataclass(frozen=True)
class Hit:
    cui: str
    name: str
    categories: tuple
    tuis: tuple = ()
    source: str = "fake"
    score: float = 0.0


def _vec(text: str, dim: int = 64) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    t = f"  {text.lower()}  "
    for i in range(len(t) - 2):
        v[int(hashlib.md5(t[i:i + 3].encode()).hexdigest(), 16) % dim] += 1.0
    n = np.linalg.norm(v)
    return v / n if n else v


class FakeEncoder:
    name = "fake-trigram"
    dimension = 64

    def __init__(self):
        self.calls = 0

    def encode(self, texts, batch_size=256):
        self.calls += 1
        return np.stack([_vec(t) for t in texts]) if texts else np.zeros((0, 64), np.float32)


@dataclass
class Snap:
    id: str
    encoder: str = "fake-trigram"


class FakeKB:
    def __init__(self, entries=KB_ENTRIES, snapshot_id="snap-1"):
        self.entries = list(entries)
        self.snapshot_id = snapshot_id
        self.encoder = FakeEncoder()
        self.matrix = np.stack([_vec(n) for _, n, _ in self.entries])
        self.search_calls = 0
        self.closed = 0

    def close(self):  # as KnowledgeBase.close: frees the store; a later call reopens it
        self.closed += 1

    def get_snapshot(self, ref="latest"):
        if ref not in ("latest", self.snapshot_id):
            raise NotFound(f"snapshot {ref!r} not found")
        return Snap(self.snapshot_id)

    def encoder_for(self, snapshot="latest"):
        return self.encoder

    def search(self, texts=None, *, vectors=None, snapshot="latest", categories=None, k=10):
        self.search_calls += 1
        if texts is not None:
            vectors = self.encoder.encode(list(texts))
        out = []
        for q in np.asarray(vectors):
            scores = self.matrix @ q
            order = sorted(range(len(self.entries)), key=lambda i: (-scores[i], self.entries[i][0]))
            hits = []
            for i in order:
                cui, name, cats = self.entries[i]
                if categories and not set(cats) & set(categories):
                    continue
                hits.append(Hit(cui, name, cats, score=float(scores[i])))
                if len(hits) >= k:
                    break
            out.append(hits)
        return out

    def sample_random(self, n, *, snapshot="latest", categories=None, seed=0):
        pool = [Hit(c, nm, cats) for c, nm, cats in self.entries
                if not categories or set(cats) & set(categories)]
        rng = random.Random(seed)
        rng.shuffle(pool)
        return pool[:n]


@dataclass
class TrainResult:
    artifact_dir: Path
    dev_metrics: dict
    history: list = field(default_factory=list)


@dataclass
class Record:
    id: str
    metrics: dict
    kb_snapshot: str | None = None
    artifact_path: str = ""
    datasets: list = field(default_factory=list)
    hyperparameters: dict = field(default_factory=dict)


def fake_artifact(root: Path, model: dict | None = None, step: int = 40) -> Path:
    """A folder that reads as a saved model (its config only): enough for warm-start planning."""
    import json

    root.mkdir(parents=True, exist_ok=True)
    (root / "tagger_config.json").write_text(json.dumps({"model": model or {"backbone": "tiny", "num_layers": 2},
                                                         "step": step}))
    return root


class FakeRegistry:
    """``latest_f1`` set: a current model m0 (``datasets``, ``artifact`` as given)."""

    def __init__(self, latest_f1: float | None = None, datasets=(), artifact: Path | str = "",
                 hyperparameters: dict | None = None):
        self.records: list[Record] = []
        self.latest: str | None = None
        if latest_f1 is not None:
            self.records.append(Record("m0", {"dev": {"f1": latest_f1}}, artifact_path=str(artifact),
                                       datasets=list(datasets), hyperparameters=hyperparameters or {}))
            self.latest = "m0"

    def register(self, artifact_dir, *, backbone, datasets, template, hyperparameters, metrics, command,
                 kb_snapshot=None, promote=False):
        rec = Record(f"m{len(self.records)}", metrics, kb_snapshot, str(artifact_dir), list(datasets),
                     hyperparameters)
        self.records.append(rec)
        if promote:
            self.latest = rec.id
        return rec

    def resolve(self, ref="latest"):
        want = self.latest if ref == "latest" else ref
        for r in self.records:
            if r.id == want:
                return r
        raise NotFound(f"model {ref!r} not found")


class FakeEvaluator:
    """Gate scores per artifact folder name (``scores[name][dataset]``); records what each model
    was asked to score, as (dataset, source of each sentence)."""

    def __init__(self, scores: dict[str, dict[str, float]]):
        self.scores = scores
        self.seen: dict[str, dict[str, list[str]]] = {}

    def __call__(self, artifact, sentences, device="auto", progress=None):
        name = Path(artifact).name
        self.seen[name] = {d: [s.source for s in sents] for d, sents in sentences.items()}
        return {d: self.scores[name][d] for d in sentences}
