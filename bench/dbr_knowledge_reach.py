"""Which test mentions could KB knowledge teach, does a DBR set carry them, and do the models find them?

DBR can only add knowledge a model lacks: a test mention the training split already tags is taught by
the corpus, and one the KB does not list cannot come from the KB. This splits the gold mentions of a
split into three groups by their lower-cased string (tokenised as DBR tokenises KB names):

- ``seen``: tagged somewhere in the training split;
- ``unseen_in_kb``: not in the training gold, but a name of the dataset's category in the KB snapshot
  (what DBR could teach);
- ``unseen_not_in_kb``: neither (left to the model's generalisation).

For each DBR set (``--dbr NAME=SET_ID``, built in ``--home``) it reports how many mentions of each group
are among the set's positives, and for each model (``--models NAME=FOLDER``) its recall per group, with
the dataset instruction and Viterbi as the eval suite scores. A DBR arm can only beat the no-DBR arm
through the ``unseen_in_kb`` mentions that its set carries and the no-DBR model misses::

    OMP_NUM_THREADS=1 .venv/bin/python bench/dbr_knowledge_reach.py --home runs/openkb-home --dataset ncbi \\
        --dbr retrieved=retrieved-1f7f6e037f7d846d,random=random-195002ffbd8f5edf \\
        --models none=runs/abl/work/none/ncbi/best,retrieved=runs/abl/work/openkb/ncbi/retrieved/best \\
        --out bench/results/dbr_knowledge_reach_ncbi.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))  # after the packages: bench/kb_ingest.py is a script

from retrieval.corpus_agreement import name_key  # noqa: E402
from retrieval.dbr import entity_words  # noqa: E402
from vaner.corpus import DATASETS, load_dataset  # noqa: E402

GROUPS = ("seen", "unseen_in_kb", "unseen_not_in_kb")


def kb_names(home: Path, snapshot: str, category: str) -> set[str]:
    """Every name of ``category`` in the snapshot, keyed as DBR keys KB names."""
    from kb_ingest.kb import KnowledgeBase
    from vaner.settings import Settings

    kb = KnowledgeBase(Settings(home=home))
    try:
        return {name_key(entity_words(p["name"])) for _, p in kb.iter_points(snapshot)
                if category in p.get("categories", ())}
    finally:
        kb.close()


def dbr_positives(home: Path, set_id: str) -> set[str]:
    path = home / "dbr" / set_id / "sentences.jsonl"
    if not path.exists():
        raise SystemExit(f"--dbr: no DBR set {set_id!r} in {home / 'dbr'}")
    with path.open(encoding="utf-8") as fh:
        return {name_key(entity_words(name)) for line in fh if line.strip() for name, _ in json.loads(line)["pos"]}


def group_of(mention: str, train_gold: set[str], kb: set[str]) -> str:
    if mention in train_gold:
        return "seen"
    return "unseen_in_kb" if mention in kb else "unseen_not_in_kb"


def _pairs(spec: str | None) -> list[tuple[str, str]]:
    return [tuple(p.split("=", 1)) for p in (spec or "").split(",") if p.strip()]  # type: ignore[misc]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", required=True, help="vaner home of the KB (and its DBR cache)")
    ap.add_argument("--snapshot", default="latest")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--split", default="test", choices=("dev", "test"))
    ap.add_argument("--dbr", default="", help="NAME=SET_ID,... DBR sets in HOME/dbr")
    ap.add_argument("--models", default="", help="NAME=FOLDER,... taggers to score per group")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--examples", type=int, default=20)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    category = DATASETS.get(args.dataset).category.value
    home = Path(args.home)
    train_gold = {name_key(s.words[a:b]) for s in load_dataset(args.dataset, "train", args.data_dir) for a, b in s.spans()}
    sents = [s for s in load_dataset(args.dataset, args.split, args.data_dir) if s.spans()]
    t0 = time.perf_counter()
    kb = kb_names(home, args.snapshot, category)
    kb_seconds = time.perf_counter() - t0
    mentions = [(i, span, name_key(s.words[span[0]:span[1]])) for i, s in enumerate(sents) for span in s.spans()]
    groups = {(i, span): group_of(m, train_gold, kb) for i, span, m in mentions}
    sizes = Counter(groups.values())
    report = {"dataset": args.dataset, "split": args.split, "category": category, "kb_home": str(home),
              "kb_names_of_category": len(kb), "kb_read_seconds": round(kb_seconds, 1),
              "mentions": len(mentions), "groups": {g: sizes[g] for g in GROUPS},
              "examples_unseen_in_kb": list(dict.fromkeys(m for i, span, m in mentions
                                                          if groups[(i, span)] == "unseen_in_kb"))[:args.examples],
              "dbr": {}, "models": {}, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": " ".join(sys.argv if argv is None else ["dbr_knowledge_reach.py", *argv])}
    positives = {name: dbr_positives(home, set_id) for name, set_id in _pairs(args.dbr)}  # read each set once
    for name, set_id in _pairs(args.dbr):
        pos = positives[name]
        carried = Counter(groups[(i, span)] for i, span, m in mentions if m in pos)
        report["dbr"][name] = {"set": set_id, "distinct_positives": len(pos),
                               "mentions_carried": {g: carried[g] for g in GROUPS}}
    if args.models:
        import torch
        from tagger_missed_mentions import missed

        torch.set_num_threads(args.threads)
        for name, folder in _pairs(args.models):
            misses = missed(folder, sents, args.dataset, args.batch_size)
            lost = Counter(groups[(i, span)] for i, spans in enumerate(misses) for span in spans)
            report["models"][name] = {"folder": folder, "recall": {
                g: round(100 * (sizes[g] - lost[g]) / sizes[g], 2) if sizes[g] else None for g in GROUPS},
                "missed": {g: lost[g] for g in GROUPS}}
            for dbr_name, pos in positives.items():  # the mentions a DBR set could have taught this model
                report["models"][name][f"missed_unseen_in_kb_carried_by_{dbr_name}"] = sum(
                    1 for i, spans in enumerate(misses) for span in spans
                    if groups[(i, span)] == "unseen_in_kb" and name_key(sents[i].words[span[0]:span[1]]) in pos)
            print(f"{name}: {report['models'][name]}", file=sys.stderr, flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
