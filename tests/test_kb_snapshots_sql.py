"""The snapshot records on SQLite and on the real PostgreSQL (127.0.0.1:5432, database ``test``).

The PostgreSQL tests run in a schema of their own (dropped afterwards), so they can rerun and
never touch other tables. When the server is absent they are skipped with a loud reason.
"""

from __future__ import annotations

import uuid

import pytest

from kb_ingest.snapshots import SnapshotInfo, SnapshotStore, new_snapshot_id, now_iso
from vaner.errors import NotFound

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _info(sid: str) -> SnapshotInfo:
    return SnapshotInfo(id=sid, status="building", latest=False, kind="umls", umls_release="2099AA",
                        encoder="enc", dimension=8, concepts=0, terms=0, filters={"languages": ["ENG"]},
                        created_at=now_iso(), collection="c_" + sid)


def exercise(store: SnapshotStore) -> None:
    a, b, c = (new_snapshot_id() + f"-{i}" for i in range(3))
    with pytest.raises(NotFound, match="no complete KB snapshot"):
        store.get("latest")
    store.create(_info(a))
    assert store.get(a).status == "building" and store.latest_id() is None
    store.complete(a, concepts=3, terms=5, skipped={"language": 2},
                   sources=[{"path": "/x", "sha256": "0" * 64, "bytes": 1}])
    got = store.get("latest")
    assert (got.id, got.status, got.latest, got.concepts, got.terms, got.skipped) == (a, "complete", True, 3, 5,
                                                                                      {"language": 2})
    assert got.sources[0]["sha256"] == "0" * 64 and got.filters == {"languages": ["ENG"]}
    store.create(_info(b))
    store.update(b, status="failed", error="boom")
    assert store.get("latest").id == a  # a failed snapshot never becomes latest
    store.create(_info(c))
    assert [i.id for i in store.building()] == [c]
    store.complete(c, concepts=1, terms=1)
    listed = store.list()
    assert [i.id for i in listed] == [a, b, c] and [i.latest for i in listed] == [False, False, True]
    store.delete(c)
    assert store.get("latest").id == a
    store.delete(a)
    with pytest.raises(NotFound):
        store.get("latest")
    with pytest.raises(NotFound, match="not found"):
        store.get("kb-none")


def test_sqlite(tmp_path):
    exercise(SnapshotStore(f"sqlite:///{tmp_path / 'vaner.db'}"))


@pytest.fixture()
def pg_url():
    psycopg = pytest.importorskip("psycopg")
    schema = "vaner_kb_test_" + uuid.uuid4().hex[:8]
    try:
        conn = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3,
                               autocommit=True)
    except Exception as exc:  # noqa: BLE001 - any failure means the server is not there
        pytest.skip(f"!!! PostgreSQL NOT AVAILABLE at 127.0.0.1:5432 (database test): {exc} -- "
                    "the PostgreSQL half of the SQL tests did NOT run")
    conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        from vaner.db import dispose_all

        dispose_all()
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()


@pytest.mark.postgres
def test_postgres(pg_url):
    store = SnapshotStore(pg_url)
    assert store.engine.dialect.name == "postgresql"
    exercise(store)


@pytest.mark.postgres
def test_postgres_kb_end_to_end(pg_url, tmp_path):
    from pathlib import Path

    from kb_ingest.kb import KnowledgeBase
    from kb_ingest.testing import hash_encoder
    from vaner.settings import Settings

    enc = hash_encoder()
    kb = KnowledgeBase(Settings(home=tmp_path, db_url=pg_url), encoder_loader=lambda name: enc)
    info = kb.ingest_umls(Path(__file__).parent / "fixtures" / "umls" / "MRCONSO.RRF")
    assert kb.get_snapshot().id == info.id and info.terms == 13
    assert kb.search(["Aspirin"], k=1)[0][0].cui == "C0004057"
    kb.close()


def race_first_completes(url: str) -> None:
    """The ``latest`` pointer row does not exist yet: completes racing to create it must not hit
    a unique violation (the shared upsert in vaner/db.py), and exactly one wins."""
    import threading

    ids = [new_snapshot_id() + f"-{i}" for i in range(6)]
    for sid in ids:
        SnapshotStore(url).create(_info(sid))
    errors: list[Exception] = []
    barrier = threading.Barrier(len(ids))

    def worker(sid: str) -> None:
        barrier.wait()
        try:
            SnapshotStore(url).complete(sid)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(sid,)) for sid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    listed = SnapshotStore(url).list()
    assert sum(i.latest for i in listed) == 1 and SnapshotStore(url).latest_id() in ids


def test_sqlite_first_completes_race(tmp_path):
    race_first_completes(f"sqlite:///{tmp_path / 'vaner.db'}")


@pytest.mark.postgres
def test_postgres_first_completes_race(pg_url):
    race_first_completes(pg_url)

