"""SQL records of the encoders snapshots were built with (table ``kb_encoders``).

The folder under ``$VANER_HOME/encoders`` holds the weights and a manifest; this table is what
another host sharing PostgreSQL, or a later audit, reads to learn where an encoder came from (its
base model, the snapshot it was aligned on, its training budget and loss) without the files.
One row per encoder name; a name is immutable once written, which is what makes it a version.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from sqlalchemy import Column, Text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Field, Session, SQLModel, select

from vaner.db import get_engine, init_tables
from vaner.errors import NotFound, Unavailable


class EncoderRow(SQLModel, table=True):
    __tablename__ = "kb_encoders"

    name: str = Field(primary_key=True, max_length=512)
    backend: str = Field(default="", max_length=32)
    version: str = Field(default="", max_length=128)
    dimension: int = 0
    base: str = Field(default="", max_length=512)
    sha256: str = Field(default="", max_length=64)
    location: str = Field(default="", sa_column=Column(Text, nullable=False))
    files_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    provenance_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    created_at: str = Field(default="", max_length=40)


@dataclass
class EncoderInfo:
    name: str
    backend: str
    version: str
    dimension: int
    base: str = ""
    sha256: str = ""
    location: str = ""
    files: dict[str, str] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    created_at: str = ""

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _info(row: EncoderRow) -> EncoderInfo:
    return EncoderInfo(name=row.name, backend=row.backend, version=row.version, dimension=row.dimension,
                       base=row.base, sha256=row.sha256, location=row.location,
                       files=json.loads(row.files_json or "{}"), provenance=json.loads(row.provenance_json or "{}"),
                       created_at=row.created_at)


class EncoderRegistry:
    def __init__(self, url: str):
        self.engine = get_engine(url)
        init_tables(self.engine, [EncoderRow])

    def _run(self, fn):  # noqa: ANN001, ANN202
        try:
            with Session(self.engine, expire_on_commit=False) as s:
                return fn(s)
        except OperationalError as exc:
            raise Unavailable(f"SQL database error: {str(exc.orig).strip().splitlines()[0]}") from None

    def record(self, record: dict, *, provenance: dict | None = None, created_at: str = "") -> EncoderInfo:
        """Insert the row for an encoder (from :meth:`Encoder.record`) unless its name is known;
        the first row stays, so a name keeps meaning the weights it was first recorded with."""
        def go(s: Session) -> EncoderInfo:
            row = s.get(EncoderRow, record["name"])
            if row is None:
                row = EncoderRow(name=record["name"], backend=record.get("backend", ""),
                                 version=str(record.get("version", "")), dimension=int(record.get("dimension", 0)),
                                 base=str((provenance or {}).get("base", {}).get("name", "")),
                                 sha256=record.get("sha256", ""), location=record.get("location", ""),
                                 files_json=json.dumps(record.get("files", {}), sort_keys=True),
                                 provenance_json=json.dumps(provenance or {}, sort_keys=True), created_at=created_at)
                s.add(row)
                try:
                    s.commit()
                except IntegrityError:  # another process recorded it first: theirs stands
                    s.rollback()
                    row = s.get(EncoderRow, record["name"])
            return _info(row)
        return self._run(go)

    def get(self, name: str) -> EncoderInfo:
        def go(s: Session) -> EncoderInfo:
            row = s.get(EncoderRow, name)
            if row is None:
                raise NotFound(f"encoder {name!r} is not recorded; `kb-ingest encoders` lists them")
            return _info(row)
        return self._run(go)

    def list(self) -> list[EncoderInfo]:
        return self._run(lambda s: [_info(r) for r in s.exec(select(EncoderRow).order_by(EncoderRow.name)).all()])

    def next_name(self, base: str, suffix: str = "aligned") -> str:
        """``<base>-aligned-<n>`` with n one past the highest recorded for that base."""
        stem = re.sub(r"[^a-z0-9._-]+", "-", base.lower().rsplit("/", 1)[-1]).strip("-.") or "encoder"
        stem = re.sub(rf"-{suffix}-\d+$", "", stem)[:80]
        pattern = re.compile(rf"^{re.escape(stem)}-{suffix}-(\d+)$")
        taken = [int(m.group(1)) for i in self.list() if (m := pattern.match(i.name))]
        return f"{stem}-{suffix}-{max(taken, default=0) + 1}"
