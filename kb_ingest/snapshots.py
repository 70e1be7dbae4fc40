"""KB snapshot records in SQL (SQLite by default, PostgreSQL by URL).

One row per ingest in ``kb_snapshots`` and a one-row pointer table ``kb_latest``. ``latest``
flips by updating that single pointer row in one transaction at the very end of an ingest, so a
reader sees the old snapshot or the new one, never a half-built one; a failed or killed ingest
leaves the pointer where it was.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from sqlalchemy.exc import OperationalError
from sqlmodel import Field, Session, SQLModel, select

from vaner.db import get_engine, init_tables, upsert_row
from vaner.errors import NotFound, Unavailable

STATUSES = ("building", "complete", "failed")
LATEST_KEY = "kb"


class KbSnapshotRow(SQLModel, table=True):
    __tablename__ = "kb_snapshots"

    id: str = Field(primary_key=True, max_length=64)
    status: str = Field(default="building", max_length=16, index=True)
    kind: str = Field(default="umls", max_length=16)
    umls_release: str = Field(default="", max_length=32)
    encoder: str = Field(default="", max_length=512)
    dimension: int = 0
    concepts: int = 0
    terms: int = 0
    skipped_json: str = "{}"
    sources_json: str = "[]"
    filters_json: str = "{}"
    collection: str = Field(default="", max_length=128)
    created_at: str = Field(default="", max_length=40)
    finished_at: str = Field(default="", max_length=40)
    error: str = ""


class KbLatestRow(SQLModel, table=True):
    __tablename__ = "kb_latest"

    key: str = Field(primary_key=True, max_length=32)
    snapshot_id: str = Field(max_length=64)


@dataclass
class SnapshotInfo:
    """Everything recorded about one snapshot; ``to_json`` is the CLI/gRPC shape."""

    id: str
    status: str
    latest: bool
    kind: str
    umls_release: str
    encoder: str
    dimension: int
    concepts: int
    terms: int
    skipped: dict[str, int] = field(default_factory=dict)
    sources: list[dict] = field(default_factory=list)
    filters: dict = field(default_factory=dict)
    created_at: str = ""
    error: str = ""
    collection: str = ""
    finished_at: str = ""

    def to_json(self) -> dict:
        out = asdict(self)
        out["snapshot"] = self.id
        return out


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_snapshot_id() -> str:
    """Sortable by creation time and readable in a terminal: ``kb-20250101-120000-1a2b``."""
    return datetime.now(timezone.utc).strftime("kb-%Y%m%d-%H%M%S-") + secrets.token_hex(2)


class SnapshotStore:
    def __init__(self, url: str):
        self.url = url
        self.engine = get_engine(url)
        init_tables(self.engine, [KbSnapshotRow, KbLatestRow])

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _run(self, fn):  # noqa: ANN001, ANN202
        try:
            with self._session() as s:
                return fn(s)
        except OperationalError as exc:
            raise Unavailable(f"SQL database error ({self.engine.url.render_as_string(hide_password=True)}): "
                              f"{str(exc.orig).strip().splitlines()[0]}") from None

    def latest_id(self) -> str | None:
        return self._run(lambda s: (r.snapshot_id if (r := s.get(KbLatestRow, LATEST_KEY)) else None))

    def _info(self, row: KbSnapshotRow, latest_id: str | None) -> SnapshotInfo:
        return SnapshotInfo(
            id=row.id, status=row.status, latest=row.id == latest_id, kind=row.kind,
            umls_release=row.umls_release, encoder=row.encoder, dimension=row.dimension,
            concepts=row.concepts, terms=row.terms, skipped=json.loads(row.skipped_json or "{}"),
            sources=json.loads(row.sources_json or "[]"), filters=json.loads(row.filters_json or "{}"),
            created_at=row.created_at, error=row.error, collection=row.collection,
            finished_at=row.finished_at)

    def create(self, info: SnapshotInfo) -> SnapshotInfo:
        row = KbSnapshotRow(id=info.id, status="building", kind=info.kind, umls_release=info.umls_release,
                            encoder=info.encoder, dimension=info.dimension,
                            skipped_json=json.dumps(info.skipped), sources_json=json.dumps(info.sources),
                            filters_json=json.dumps(info.filters, sort_keys=True),
                            collection=info.collection, created_at=info.created_at or now_iso())

        def go(s: Session) -> None:
            s.add(row)
            s.commit()
        self._run(go)
        return self.get(info.id)

    def update(self, snapshot_id: str, **values: object) -> None:
        def go(s: Session) -> None:
            row = _apply(s, snapshot_id, values)
            s.add(row)
            s.commit()
        self._run(go)

    def complete(self, snapshot_id: str, *, make_latest: bool = True, **values: object) -> None:
        """Mark complete and flip ``latest`` in the same transaction."""
        def go(s: Session) -> None:
            row = _apply(s, snapshot_id, values)
            row.status = "complete"
            row.finished_at = now_iso()
            s.add(row)
            if make_latest:
                upsert_row(s, KbLatestRow, {"key": LATEST_KEY}, {"snapshot_id": snapshot_id})
            s.commit()
        self._run(go)

    def list(self) -> list[SnapshotInfo]:
        def go(s: Session) -> list[SnapshotInfo]:
            ptr = s.get(KbLatestRow, LATEST_KEY)
            latest = ptr.snapshot_id if ptr else None
            rows = s.exec(select(KbSnapshotRow).order_by(KbSnapshotRow.created_at, KbSnapshotRow.id)).all()
            return [self._info(r, latest) for r in rows]
        return self._run(go)

    def get(self, ref: str = "latest") -> SnapshotInfo:
        def go(s: Session) -> SnapshotInfo:
            ptr = s.get(KbLatestRow, LATEST_KEY)
            latest = ptr.snapshot_id if ptr else None
            key = (ref or "latest").strip()
            if key == "latest":
                if latest is None:
                    raise NotFound("no complete KB snapshot yet; run `kb-ingest umls PATH/MRCONSO.RRF` first")
                key = latest
            row = s.get(KbSnapshotRow, key)
            if row is None:
                raise NotFound(f"snapshot {ref!r} not found; `kb-ingest snapshots` lists them")
            return self._info(row, latest)
        return self._run(go)

    def delete(self, snapshot_id: str) -> None:
        """Remove the row; if it was latest, the newest other complete snapshot becomes latest."""
        def go(s: Session) -> None:
            row = s.get(KbSnapshotRow, snapshot_id)
            if row is None:
                raise NotFound(f"snapshot {snapshot_id!r} not found")
            ptr = s.get(KbLatestRow, LATEST_KEY)
            s.delete(row)
            if ptr is not None and ptr.snapshot_id == snapshot_id:
                nxt = s.exec(select(KbSnapshotRow).where(KbSnapshotRow.status == "complete",
                                                         KbSnapshotRow.id != snapshot_id)
                             .order_by(KbSnapshotRow.created_at.desc(), KbSnapshotRow.id.desc())).first()
                if nxt is None:
                    s.delete(ptr)
                else:
                    ptr.snapshot_id = nxt.id
                    s.add(ptr)
            s.commit()
        self._run(go)

    def building(self) -> list[SnapshotInfo]:
        return [i for i in self.list() if i.status == "building"]


def _apply(s: Session, snapshot_id: str, values: dict) -> KbSnapshotRow:
    """Load a snapshot row and set fields on it; JSON-typed fields are stored serialised."""
    row = s.get(KbSnapshotRow, snapshot_id)
    if row is None:
        raise NotFound(f"snapshot {snapshot_id} not found")
    for key, value in values.items():
        if key in ("skipped", "sources", "filters"):
            setattr(row, f"{key}_json", json.dumps(value, sort_keys=True))
        else:
            setattr(row, key, value)
    return row
