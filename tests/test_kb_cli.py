"""``kb-ingest`` end to end in-process with the real MiniLM encoder: --json prints exactly one
JSON value on stdout, errors are one line on stderr with a non-zero exit and no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kb_ingest.cli import main

FIX = Path(__file__).parent / "fixtures"
pytestmark = pytest.mark.integration


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_json_shapes(vaner_home, capsys):
    rc, out, _ = run(capsys, "umls", str(FIX / "umls" / "MRCONSO.RRF"), "--json")
    assert rc == 0
    res = json.loads(out)
    assert res["snapshot"].startswith("kb-") and res["concepts"] == 7 and res["terms"] == 13
    assert res["skipped"]["suppressed"] == 2 and res["encoder"] == "all-MiniLM-L6-v2"

    rc, out, _ = run(capsys, "snapshots", "--json")
    snaps = json.loads(out)
    assert rc == 0 and isinstance(snaps, list)
    assert {"id", "status", "latest"} <= set(snaps[0]) and snaps[0]["latest"] is True

    rc, out, _ = run(capsys, "search", "heart attack or diabetes", "-k", "3", "--json")
    hits = json.loads(out)
    assert rc == 0 and len(hits) == 3 and {"cui", "name", "categories", "score"} <= set(hits[0])
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

    rc, out, _ = run(capsys, "search", "acetylsalicylic acid", "--category", "Chemical", "-k", "2", "--json")
    hits = json.loads(out)
    assert hits[0]["cui"] == "C0004057" and all("Chemical" in h["categories"] for h in hits)

    rc, out, _ = run(capsys, "search", "x", "--encoder", "/nonexistent/encoder")
    assert rc != 0

    rc, out, _ = run(capsys, "--home", str(vaner_home), "drop", res["snapshot"], "--json")
    assert rc == 0 and json.loads(out) == {"dropped": res["snapshot"]}


def test_cli_dataset(vaner_home, capsys, tmp_path):
    conll = tmp_path / "train.tsv"
    conll.write_text("Familial\tB-Disease\nbreast\tI-Disease\ncancer\tI-Disease\n\n")
    rc, out, _ = run(capsys, "dataset", str(conll), "--type", "Disease", "--json")
    res = json.loads(out)
    assert rc == 0 and res["terms"] == 1 and res["kind"] == "dataset"


@pytest.mark.parametrize("argv, code, text", [
    (["umls", "/nonexistent/MRCONSO.RRF"], 3, "no such file"),
    (["umls", "{fix}"], 2, "is a directory"),
    (["umls", "{fix}/umls/MRCONSO.RRF", "--encoder", "no-such-encoder"], 3, "unknown encoder"),
    (["umls", "{fix}/umls_dirty/MRCONSO.RRF", "--strict"], 2, "MRCONSO.RRF:4: field count"),
    (["umls", "{fix}/umls_dirty/MRCONSO.RRF"], 2, "lines are malformed"),
    (["--qdrant-url", "http://127.0.0.1:1", "umls", "{fix}/umls/MRCONSO.RRF"], 6, "cannot reach Qdrant"),
    (["search", "x"], 3, "no complete KB snapshot"),
    (["dataset", "{fix}/umls/MRCONSO.RRF", "--type", "Organ"], 2, "unknown entity type"),
])
def test_cli_errors_are_one_line(vaner_home, capsys, argv, code, text):
    rc, out, err = run(capsys, *[a.replace("{fix}", str(FIX)) for a in argv], "--json")
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == code, err
    assert len(lines) == 1 and text in lines[0] and "Traceback" not in err
    assert out == ""
