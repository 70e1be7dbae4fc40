"""Dense Bioentities Recognition (DBR) sample assembly and its on-disk cache (paper 3.4, 4.3).

For each training sentence: mine query phrases, retrieve the top-k KB entities of every phrase,
then sample at most ``max_positive`` entities of the sentence's category (tagged B/I) and at most
``max_negative`` of other categories (tagged O), shuffle, and concatenate them into ONE sentence
with the dataset-free instruction (``Sentence(dataset=None)``). ``random`` mode keeps exactly the
per-sentence counts of ``retrieved`` mode but draws the entities at random from the KB: the paper's
ablation controls for the number of entities, so the counts have to come from the retrieved run.

Determinism: every sentence gets its own ``random.Random`` seeded from the user seed and a CRC of
``dataset:index`` (Python's ``hash`` is salted per process), and candidate pools are ordered
before sampling, so the same snapshot, data and parameters give byte-identical JSONL.

Cache: a DBR set is ``settings.dbr_dir/<key>/{sentences.jsonl,manifest.json}``, where ``key`` hashes
the snapshot id, dataset names and their training-file digests, the parameters and the miner
version. It is written to a temporary folder and renamed into place, so a killed build never leaves
a half set that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import time
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from retrieval.corpus_agreement import AGREEMENT_VERSION, CorpusAgreement, name_key
from retrieval.phrases import MINER_VERSION, MinerConfig, PhraseMiner
from retrieval.retrieve import KnowledgeBaseLike, Retriever, normalise_phrase
from vaner import __version__
from vaner.categories import Category
from vaner.corpus import DATASETS, Sentence, default_data_dir, load_dataset, tags_to_spans
from vaner.errors import InvalidArgument, NotFound
from vaner.permissions import make_private_dir
from vaner.progress import ProgressCallback, ProgressTracker
from vaner.settings import Settings

log = logging.getLogger(__name__)

MODES = ("retrieved", "random")
ASSEMBLY_VERSION = "dbr-1"
_TOKEN_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class DbrParams:
    mode: str = field(default="retrieved", metadata={"help": "retrieved (paper) or random (ablation)"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    max_positive: int = field(default=10, metadata={"help": "entities of the instruction's type per sentence"})
    max_negative: int = field(default=5, metadata={"help": "entities of other types per sentence"})
    top_k: int = field(default=5, metadata={"help": "KB entities kept per query phrase"})
    miner: MinerConfig = field(default_factory=MinerConfig)
    corpus_agreement: float = field(default=0.0, metadata={
        "help": "drop entities whose DBR label the training split contradicts: positives it tags in fewer than "
                "this share of their occurrences, negatives it tags at least this often (0: keep all, the paper)"})
    max_uses: int = field(default=0, metadata={
        "help": "sentences one KB name may appear in across the set (0: no limit, the paper); 1 spreads the set "
                "over as many distinct names as retrieval offers, as random sampling does by construction"})

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidArgument(f"DBR mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.max_positive < 0 or self.max_negative < 0 or self.max_positive + self.max_negative == 0:
            raise InvalidArgument("max_positive and max_negative must be >= 0 and not both 0")
        if self.top_k < 1:
            raise InvalidArgument("top_k must be >= 1")
        if self.max_uses < 0:
            raise InvalidArgument(f"max_uses must be >= 0 (0: no limit), not {self.max_uses}")
        if not 0.0 <= self.corpus_agreement <= 1.0:
            raise InvalidArgument(f"corpus_agreement must be in [0, 1], not {self.corpus_agreement}")
        if isinstance(self.miner, dict):
            object.__setattr__(self, "miner", MinerConfig(**self.miner))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DbrSet:
    """A built (or cached) DBR set: where it is and what it was built from."""

    id: str
    path: Path
    sentences: int
    snapshot: str
    params: dict[str, Any]
    manifest: dict[str, Any]
    cached: bool = False

    def load(self) -> list[Sentence]:
        return read_sentences(self.path / "sentences.jsonl")


def entity_words(name: str) -> list[str]:
    """Split a KB name the way the CoNLL corpora are tokenised (punctuation as its own word), so DBR
    sentences look like training sentences to the sub-word tokenizer."""
    return _TOKEN_RE.findall(name)


def sentence_rng(seed: int, dataset: str, index: int) -> random.Random:
    """A private RNG per training sentence: stable across processes and independent of order."""
    return random.Random((int(seed) << 32) ^ zlib.crc32(f"{dataset}:{index}".encode()))


def assemble(category: Category, positives: Sequence[str], negatives: Sequence[str], rng: random.Random,
             max_positive: int = 10, max_negative: int = 5, source: str = "") -> Sentence | None:
    """Sample, shuffle and concatenate entity names into one DBR sentence (None if nothing to add)."""
    return concatenate(category, sample_entities(positives, negatives, rng, max_positive, max_negative), source)


def sample_entities(positives: Sequence[str], negatives: Sequence[str], rng: random.Random, max_positive: int = 10,
                    max_negative: int = 5) -> list[tuple[str, bool]]:
    """The entities of one DBR sentence, in sentence order, as (name, positive)."""
    pos = rng.sample(list(positives), min(max_positive, len(positives)))
    neg = rng.sample(list(negatives), min(max_negative, len(negatives)))
    items = [(n, True) for n in pos] + [(n, False) for n in neg]
    rng.shuffle(items)
    return items


def concatenate(category: Category, items: Sequence[tuple[str, bool]], source: str = "") -> Sentence | None:
    """One DBR sentence from (name, positive) pairs: positives tagged B/I, negatives O."""
    words: list[str] = []
    tags: list[str] = []
    for name, positive in items:
        toks = entity_words(name)
        if not toks:
            continue
        words.extend(toks)
        tags.extend((["B"] + ["I"] * (len(toks) - 1)) if positive else ["O"] * len(toks))
    if not words:
        return None
    return Sentence(tuple(words), tuple(tags), category, None, source)


def split_pools(hits: Sequence[Any], category: Category) -> tuple[list[str], list[str]]:
    """Positive names carry the sentence's category; negatives carry none of it. A concept of
    several categories that include it is positive (the instruction asks for that type)."""
    pos: list[str] = []
    neg: list[str] = []
    seen: set[str] = set()
    for h in hits:
        key = normalise_phrase(h.name)
        if not key or key in seen:
            continue
        seen.add(key)
        cats = {Category.parse(c) for c in h.categories}
        (pos if category in cats else neg).append(h.name)
    return pos, neg


# ---------------------------------------------------------------- cache


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_fingerprints(datasets: Sequence[str], data_dir: str | Path | None) -> dict[str, str]:
    root = Path(data_dir or default_data_dir())
    out = {}
    for name in datasets:
        info = DATASETS.get(name)
        path = root / info.directory / "train.tsv"
        if not path.exists():
            raise NotFound(f"{path}: training split of dataset {name!r} not found (set --data-dir)")
        out[info.name] = _file_digest(path)[:16]
    return out


def cache_key(snapshot_id: str, datasets: Sequence[str], fingerprints: dict[str, str], params: DbrParams) -> str:
    hashed = params.to_dict()
    if not hashed["corpus_agreement"]:  # off: the sets built before the option keep their keys
        del hashed["corpus_agreement"]
    else:
        hashed["agreement_version"] = AGREEMENT_VERSION
    if not hashed["max_uses"]:  # likewise
        del hashed["max_uses"]
    blob = json.dumps({"snapshot": snapshot_id, "datasets": sorted(datasets), "data": fingerprints,
                       "params": hashed, "miner": MINER_VERSION, "assembly": ASSEMBLY_VERSION},
                      sort_keys=True)
    return f"{params.mode}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def write_sentences(path: Path, rows: Sequence[tuple[Sentence, dict[str, Any]]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for sent, extra in rows:
            fh.write(json.dumps({"words": list(sent.words), "tags": list(sent.tags),
                                 "category": sent.category.value, "origin": sent.source, **extra},
                                ensure_ascii=False) + "\n")


def read_sentences(path: Path) -> list[Sentence]:
    out = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            d = json.loads(line)
            out.append(Sentence(tuple(d["words"]), tuple(d["tags"]), Category.parse(d["category"]), None,
                                d.get("origin") or f"{path}:{lineno}"))
    return out


def load_cached(settings: Settings, key: str) -> DbrSet | None:
    folder = settings.dbr_dir / key
    manifest_path = folder / "manifest.json"
    if not (manifest_path.exists() and (folder / "sentences.jsonl").exists()):
        return None
    m = json.loads(manifest_path.read_text())
    return DbrSet(key, folder, int(m["counts"]["sentences"]), m["snapshot"], m["params"], m, cached=True)


def list_sets(settings: Settings) -> list[dict[str, Any]]:
    out = []
    if settings.dbr_dir.exists():
        for p in sorted(settings.dbr_dir.glob("*/manifest.json")):
            out.append(json.loads(p.read_text()))
    return out


def dbr_stats(dbr: DbrSet, corpora: Mapping[str, Sequence[Sentence]] | None = None) -> dict[str, Any]:
    """Diagnostics of a DBR set, for the ablation's "why" questions (paper Fig. 3: how dense DBR
    sentences are; what they inject). Densities are per DBR sentence; ``coverage`` is the share of
    training sentences that received one (a sentence with no retrieved entity gets none). With the
    training ``corpora`` (name -> train split, as built), it also says how much of DBR is the
    sentence's own gold mentions (a KB holding the training splits hands them back) and the
    datasets' own entity density. Distinct names/concepts need a set built since they were recorded
    (older sets give ``None`` for what they lack)."""
    with (dbr.path / "sentences.jsonl").open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    counts = dbr.manifest.get("counts", {})
    n = len(rows)
    n_pos = sum(int(r.get("n_pos", 0)) for r in rows)
    n_neg = sum(int(r.get("n_neg", 0)) for r in rows)
    recorded = bool(rows) and all("pos" in r and "neg" in r for r in rows)

    def positives(r: dict) -> set[str]:
        if recorded:
            return {name_key(entity_words(name)) for name, _ in r["pos"]}
        return {name_key(r["words"][a:b]) for a, b in tags_to_spans(r["tags"])}

    pos_names = set().union(*(positives(r) for r in rows)) if rows else set()
    neg_names = {name_key(entity_words(name)) for r in rows for name, _ in r["neg"]} if recorded else None
    cuis = {cui for r in rows for _, cui in r["pos"] + r["neg"] if cui} if recorded else None
    training = counts.get("training_sentences")
    per = (lambda x: round(x / n, 3)) if n else (lambda x: None)
    out: dict[str, Any] = {
        "id": dbr.id, "mode": dbr.params.get("mode"), "snapshot": dbr.snapshot, "sentences": n,
        "training_sentences": training, "coverage": round(n / training, 4) if training else None,
        "skipped_no_entities": counts.get("skipped_no_entities"),
        "entities_per_sentence": per(n_pos + n_neg), "positives_per_sentence": per(n_pos),
        "negatives_per_sentence": per(n_neg),
        "positive_share": round(n_pos / (n_pos + n_neg), 4) if n_pos + n_neg else None,
        "share_with_positive": per(sum(1 for r in rows if "B" in r["tags"])),
        "words_per_sentence": per(sum(len(r["words"]) for r in rows)),
        "distinct_entities": {"positive": len(pos_names), "negative": None if neg_names is None else len(neg_names),
                              "all": None if neg_names is None else len(pos_names | neg_names)},
        "distinct_concepts": None if cuis is None else len(cuis),
        "queries": counts.get("queries"), "unique_queries": counts.get("unique_queries"),
        "build_seconds": dbr.manifest.get("build_seconds"), "timings": counts.get("timings"),
    }
    if corpora:
        gold_total = gold_hit = pos_total = pos_gold = 0
        for r in rows:
            dataset, _, idx = str(r.get("origin", "")).partition(":train:")
            if dataset not in corpora or not idx.isdigit() or int(idx) >= len(corpora[dataset]):
                continue
            sent = corpora[dataset][int(idx)]
            gold = {name_key(sent.words[a:b]) for a, b in sent.spans()}
            got = positives(r)
            gold_total, gold_hit = gold_total + len(gold), gold_hit + len(gold & got)
            pos_total, pos_gold = pos_total + len(got), pos_gold + len(got & gold)
        n_train = sum(len(v) for v in corpora.values())
        tables = _agreement_tables(corpora)
        judged = contradicted = 0
        for r in rows:
            table = tables.get(Category.parse(r["category"]))
            for name in (positives(r) if table else ()):
                share = table.tagged_share(name.split())
                judged += share is not None
                contradicted += share is not None and share < 0.5
        out.update({
            # the corpus-agreement diagnostic: positives seen in the training text, and those it tags
            # less than half of the time (what ``corpus_agreement`` removes)
            "positives_seen_in_corpus": round(judged / n_pos, 4) if n_pos else None,
            "positives_contradicted": round(contradicted / n_pos, 4) if n_pos else None,
            "gold_mentions_injected": round(gold_hit / gold_total, 4) if gold_total else None,
            "positives_that_are_gold": round(pos_gold / pos_total, 4) if pos_total else None,
            "dataset_entities_per_sentence": round(sum(len(s.spans()) for v in corpora.values() for s in v)
                                                   / n_train, 3) if n_train else None,
        })
    return out


# ---------------------------------------------------------------- build


class DbrBuilder:
    """Builds DBR sets from one KB; cached by key, so a rebuild happens only when inputs change."""

    def __init__(self, settings: Settings, kb: KnowledgeBaseLike):
        self.settings = settings
        self.kb = kb

    def build(self, datasets: Sequence[str], params: DbrParams | None = None, *, snapshot: str = "latest",
              data_dir: str | Path | None = None, progress: ProgressCallback | None = None,
              force: bool = False) -> DbrSet:
        params = params or DbrParams()
        names = [DATASETS.get(n).name for n in datasets if n.strip()]
        if not names:
            raise InvalidArgument("no datasets given for DBR (e.g. --datasets ncbi,s800)")
        names = list(dict.fromkeys(names))
        snap = self.kb.get_snapshot(snapshot or "latest")
        snap_id = str(snap.id)
        prints = dataset_fingerprints(names, data_dir)
        key = cache_key(snap_id, names, prints, params)
        if not force:
            hit = load_cached(self.settings, key)
            if hit is not None:
                log.info("DBR set %s reused from cache (%d sentences)", key, hit.sentences)
                return hit
        t0 = time.monotonic()
        corpora = {n: load_dataset(n, "train", data_dir) for n in names}
        if params.mode == "retrieved":
            rows, counts = self._build_retrieved(corpora, params, snap_id, progress)
            extra_manifest: dict[str, Any] = {}
        else:
            base = self.build(names, DbrParams(**{**params.to_dict(), "mode": "retrieved"}), snapshot=snap_id,
                              data_dir=data_dir, progress=progress)
            rows, counts = self._build_random(base, params, snap_id, progress, corpora)
            extra_manifest = {"counts_from": base.id}
        elapsed = time.monotonic() - t0
        manifest = {
            "id": key, "snapshot": snap_id, "encoder": getattr(snap, "encoder", None), "datasets": names,
            "data_fingerprints": prints, "data_dir": str(Path(data_dir or default_data_dir())),
            "params": params.to_dict(), "miner_version": MINER_VERSION, "assembly_version": ASSEMBLY_VERSION,
            "code_version": __version__, "counts": counts, "build_seconds": round(elapsed, 2),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra_manifest,
        }
        return self._publish(key, rows, manifest)

    def _publish(self, key: str, rows: list[tuple[Sentence, dict[str, Any]]], manifest: dict[str, Any]) -> DbrSet:
        make_private_dir(self.settings.dbr_dir)
        final = self.settings.dbr_dir / key
        tmp = self.settings.dbr_dir / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        write_sentences(tmp / "sentences.jsonl", rows)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str))
        if final.exists():  # a forced rebuild, or a concurrent builder got there first
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:  # another builder published the same key between rmtree and replace
            shutil.rmtree(tmp, ignore_errors=True)
            cached = load_cached(self.settings, key)
            if cached is None:
                raise
            return cached
        return DbrSet(key, final, manifest["counts"]["sentences"], manifest["snapshot"], manifest["params"],
                      manifest)

    def _build_retrieved(self, corpora: dict[str, list[Sentence]], params: DbrParams, snap_id: str,
                         progress: ProgressCallback | None):
        total = sum(len(v) for v in corpora.values())
        t_start = time.perf_counter()
        mine_t = ProgressTracker("dbr: mine phrases", total=total, callback=progress)
        per_sentence: list[tuple[str, int, Sentence, list[str]]] = []
        for name, sents in corpora.items():
            miner = PhraseMiner(params.miner).fit(s.words for s in sents)
            for i, s in enumerate(sents):
                per_sentence.append((name, i, s, [p.text for p in miner.mine(s.words)]))
                mine_t.advance()
        mine_t.finish()
        unique = list(dict.fromkeys(normalise_phrase(p) for *_, ps in per_sentence for p in ps))
        t_mined = time.perf_counter()
        retriever = Retriever(self.kb, snap_id, k=params.top_k)
        hits_list = retriever.retrieve(unique, progress=progress)
        t_retrieved = time.perf_counter()
        by_phrase = dict(zip(unique, hits_list, strict=True))
        agreement = _agreements(corpora, params)
        asm_t = ProgressTracker("dbr: assemble", total=total, callback=progress)
        rows: list[tuple[Sentence, dict[str, Any]]] = []
        n_pos = n_neg = skipped = 0
        dropped = {"positives": 0, "negatives": 0}
        uses: dict[str, int] = {}
        used_up = 0
        for name, i, sent, phrases in per_sentence:
            hits = [h for p in phrases for h in by_phrase.get(normalise_phrase(p), [])]
            pos, neg = split_pools(hits, sent.category)
            if sent.category in agreement:
                pos, neg = _agreeing(agreement[sent.category], pos, neg, params.corpus_agreement, dropped)
            if params.max_uses:
                before = len(pos) + len(neg)
                pos = [n for n in pos if uses.get(name_key(entity_words(n)), 0) < params.max_uses]
                neg = [n for n in neg if uses.get(name_key(entity_words(n)), 0) < params.max_uses]
                used_up += before - len(pos) - len(neg)
            cuis: dict[str, str] = {}
            for h in hits:
                cuis.setdefault(h.name, h.cui)
            rng = sentence_rng(params.seed, name, i)
            dbr = self._assemble_counted(sent.category, pos, neg, rng, params, f"{name}:train:{i}")
            asm_t.advance()
            if dbr is None:
                skipped += 1
                continue
            sentence, np_, nn, items = dbr
            for n, _positive in items:
                k = name_key(entity_words(n))
                uses[k] = uses.get(k, 0) + 1
            n_pos += np_
            n_neg += nn
            rows.append((sentence, {"n_pos": np_, "n_neg": nn, **_entity_record(items, cuis)}))
        asm_t.finish()
        # interleave datasets: a consumer that keeps a prefix (a DBR ratio cap) gets every dataset
        random.Random((int(params.seed) << 32) ^ zlib.crc32(b"order")).shuffle(rows)
        counts = {"training_sentences": total, "sentences": len(rows), "skipped_no_entities": skipped,
                  "positives": n_pos, "negatives": n_neg, "unique_queries": len(unique),
                  "queries": sum(len(ps) for *_, ps in per_sentence)}
        if agreement:
            counts["dropped_by_corpus_agreement"] = dropped
        if params.max_uses:
            counts["dropped_by_max_uses"] = used_up
        counts["timings"] = {"mine_s": round(t_mined - t_start, 2),
                             "encode_s": round(retriever.stats["encode_seconds"], 2),
                             "search_s": round(retriever.stats["search_seconds"], 2),
                             "retrieve_s": round(t_retrieved - t_mined, 2),
                             "assemble_s": round(time.perf_counter() - t_retrieved, 2)}
        return rows, counts

    @staticmethod
    def _assemble_counted(category: Category, pos: list[str], neg: list[str], rng: random.Random,
                          params: DbrParams, source: str):
        np_ = min(params.max_positive, len(pos))
        nn = min(params.max_negative, len(neg))
        items = sample_entities(pos, neg, rng, params.max_positive, params.max_negative)
        s = concatenate(category, items, source)
        return None if s is None else (s, np_, nn, items)

    def _build_random(self, base: DbrSet, params: DbrParams, snap_id: str, progress: ProgressCallback | None,
                      corpora: dict[str, list[Sentence]] | None = None):
        """Same per-sentence counts as ``base`` (retrieved), entities drawn at random from the KB (and,
        with ``params.corpus_agreement``, through the same corpus filter as the retrieved ones)."""
        base_rows = []
        with (base.path / "sentences.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    base_rows.append(json.loads(line))
        need_pos: dict[Category, int] = {}
        need_neg: dict[Category, int] = {}
        for r in base_rows:
            c = Category.parse(r["category"])
            need_pos[c] = need_pos.get(c, 0) + int(r.get("n_pos", 0))
            need_neg[c] = need_neg.get(c, 0) + int(r.get("n_neg", 0))
        pools_pos: dict[Category, list[str]] = {}
        pools_neg: dict[Category, list[str]] = {}
        cuis: dict[str, str] = {}
        agreement = _agreements(corpora or {}, params)
        dropped = {"positives": 0, "negatives": 0}
        for c in sorted(set(need_pos) | set(need_neg), key=lambda c: c.value):
            others = [o for o in Category if o != c]
            spare = 1.1 if c in agreement else 1.0  # the filter drops a few: draw a little more
            pools_pos[c] = self._random_names(int(need_pos.get(c, 0) * spare), [c], c, True, snap_id, params.seed,
                                              cuis)
            pools_neg[c] = self._random_names(int(need_neg.get(c, 0) * spare), others, c, False, snap_id,
                                              params.seed + 1, cuis)
            if c in agreement:
                pools_pos[c], pools_neg[c] = _agreeing(agreement[c], pools_pos[c], pools_neg[c],
                                                       params.corpus_agreement, dropped)
        tracker = ProgressTracker("dbr: random assemble", total=len(base_rows), callback=progress)
        rows: list[tuple[Sentence, dict[str, Any]]] = []
        cursor_pos = {c: 0 for c in pools_pos}
        cursor_neg = {c: 0 for c in pools_neg}
        n_pos = n_neg = 0
        for r in base_rows:
            c = Category.parse(r["category"])
            k_pos, k_neg = int(r.get("n_pos", 0)), int(r.get("n_neg", 0))
            pos = _take(pools_pos[c], cursor_pos, c, k_pos)
            neg = _take(pools_neg[c], cursor_neg, c, k_neg)
            origin = r.get("origin", "")
            dataset, _, idx = origin.partition(":train:")
            rng = sentence_rng(params.seed, dataset or "random", int(idx) if idx.isdigit() else 0)
            items = sample_entities(pos, neg, rng, len(pos), len(neg))
            s = concatenate(c, items, origin)
            tracker.advance()
            if s is None:
                continue
            n_pos += len(pos)
            n_neg += len(neg)
            rows.append((s, {"n_pos": len(pos), "n_neg": len(neg), **_entity_record(items, cuis)}))
        tracker.finish()
        counts = {"training_sentences": base.manifest["counts"].get("training_sentences"), "sentences": len(rows),
                  "positives": n_pos, "negatives": n_neg,
                  "kb_pool": {c.value: [len(pools_pos[c]), len(pools_neg[c])] for c in pools_pos}}
        if agreement:
            counts["dropped_by_corpus_agreement"] = dropped
        return rows, counts

    def _random_names(self, n: int, categories: list[Category], target: Category, positive: bool,
                      snap_id: str, seed: int, cuis: dict[str, str]) -> list[str]:
        """``n`` names drawn at random (more for negatives); ``cuis`` learns each name's concept."""
        if n <= 0:
            return []
        # over-draw negatives: multi-category concepts that also carry the target are dropped
        want = n if positive else int(n * 1.2) + 10
        hits = self.kb.sample_random(want, snapshot=snap_id, categories=categories, seed=seed)
        names = []
        for h in hits:
            cats = {Category.parse(c) for c in h.categories}
            if (target in cats) == positive and entity_words(h.name):
                names.append(h.name)
                cuis.setdefault(h.name, h.cui)
        if not names:
            log.warning("KB snapshot %s has no %s entities for random DBR of %s", snap_id,
                        "positive" if positive else "negative", target.value)
        return names


def _agreements(corpora: Mapping[str, Sequence[Sentence]], params: DbrParams) -> dict[Category, CorpusAgreement]:
    """One corpus-agreement table per category, from the training splits of that category (empty when off)."""
    return _agreement_tables(corpora) if params.corpus_agreement else {}


def _agreement_tables(corpora: Mapping[str, Sequence[Sentence]]) -> dict[Category, CorpusAgreement]:
    by_category: dict[Category, list[Sentence]] = {}
    for sents in corpora.values():
        for s in sents:
            by_category.setdefault(s.category, []).append(s)
    return {c: CorpusAgreement.of(sents) for c, sents in by_category.items()}


def _agreeing(table: CorpusAgreement, pos: list[str], neg: list[str], threshold: float,
              dropped: dict[str, int]) -> tuple[list[str], list[str]]:
    """The pools without the names whose DBR label the corpus contradicts (counted in ``dropped``)."""
    kept_pos = [n for n in pos if table.agrees(entity_words(n), True, threshold)]
    kept_neg = [n for n in neg if table.agrees(entity_words(n), False, threshold)]
    dropped["positives"] += len(pos) - len(kept_pos)
    dropped["negatives"] += len(neg) - len(kept_neg)
    return kept_pos, kept_neg


def _entity_record(items: Sequence[tuple[str, bool]], cuis: dict[str, str]) -> dict[str, list[list[str]]]:
    """What a DBR sentence injected, for diagnostics (:func:`dbr_stats`): [name, cui] pairs of its
    positives and negatives, in sentence order (names that tokenise to nothing are not in it)."""
    return {kind: [[n, cuis.get(n, "")] for n, positive in items if positive is want and entity_words(n)]
            for kind, want in (("pos", True), ("neg", False))}


def _take(pool: list[str], cursor: dict[Category, int], c: Category, k: int) -> list[str]:
    """Deal the next ``k`` names from a pool; a pool smaller than the demand wraps around (a small KB
    repeats entities rather than silently changing the counts the ablation controls for)."""
    if not pool or k <= 0:
        return []
    out = []
    seen: set[str] = set()
    tries = 0
    while len(out) < k and tries < k + len(pool):
        name = pool[cursor[c] % len(pool)]
        cursor[c] += 1
        tries += 1
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out
