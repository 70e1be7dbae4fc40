"""Model registry: every trained tagger is an immutable version (SQL record + artifact folder).

Why SQL and not a JSON file: the CLI, the tagger service and a retrain job may register, promote
or resolve at the same time, possibly from different hosts sharing PostgreSQL; transactions make
"promote" atomic. The ``latest`` alias is a single-row table (``model_alias``) rewritten inside
one transaction, so there is never a moment with zero or two latest versions.

Artifacts are copied into ``settings.models_dir/<id>`` through a temporary folder and a rename,
so a crash mid-copy never leaves a half-written version that ``resolve`` could hand out.

A bundled default (``<repo>/models/default``: a ``VanerTagger.save`` folder plus
``model_card.json``) is registered and promoted automatically the first time ``latest`` is asked
for in an empty registry, so ``vaner extract`` works right after install with no training.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Column, DateTime, Text
from sqlmodel import Field, Session, SQLModel, select

from vaner.db import get_engine, init_tables, upsert_row
from vaner.errors import InvalidArgument, NotFound
from vaner.locks import exclusive_lock
from vaner.permissions import make_private_dir
from vaner.settings import Settings

log = logging.getLogger(__name__)

LATEST = "latest"
FOLDER = "folder"
MODEL_CARD = "model_card.json"
BUNDLED_DEFAULT = Path(__file__).resolve().parent.parent / "models" / "default"


class ModelRow(SQLModel, table=True):
    __tablename__ = "model_version"

    id: str = Field(primary_key=True, max_length=64)
    backbone: str
    datasets_json: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    template_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    hyperparameters_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    metrics_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    command: str = Field(default="", sa_column=Column(Text, nullable=False))
    kb_snapshot: str | None = None
    artifact_path: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    status: str = Field(default="ready", max_length=16)


class ModelAlias(SQLModel, table=True):
    """One row per alias name; today only ``latest``."""

    __tablename__ = "model_alias"

    name: str = Field(primary_key=True, max_length=32)
    model_id: str = Field(foreign_key="model_version.id")


_NEWEST_FIRST = (ModelRow.created_at.desc(), ModelRow.id.desc())  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ModelRecord:
    id: str
    latest: bool
    backbone: str
    datasets: list[str] = field(hash=False)
    template: dict = field(hash=False)
    hyperparameters: dict = field(hash=False)
    metrics: dict = field(hash=False)
    command: str
    kb_snapshot: str | None
    artifact_path: Path
    created_at: datetime
    status: str = "ready"  # "folder": a saved model used in place, not registered

    @property
    def registered(self) -> bool:
        return self.status != FOLDER

    @classmethod
    def for_folder(cls, path: Path) -> ModelRecord:
        """A saved model folder used as is (``--model PATH``, a server's configured folder): its id
        is the path, and what the registry would know comes from its own config and model card."""
        cfg = json.loads((path / "tagger_config.json").read_text()).get("model", {})
        card = json.loads((path / MODEL_CARD).read_text()) if (path / MODEL_CARD).exists() else {}
        created = datetime.fromtimestamp((path / "tagger_config.json").stat().st_mtime, timezone.utc)
        return cls(id=str(path), latest=False, backbone=str(card.get("backbone", cfg.get("backbone", ""))),
                   datasets=list(card.get("datasets", [])), template=card.get("template", cfg.get("template", {})),
                   hyperparameters=card.get("hyperparameters", {}), metrics=card.get("metrics", {}),
                   command=card.get("command", ""), kb_snapshot=card.get("kb_snapshot"), artifact_path=path,
                   created_at=created, status=FOLDER)

    def to_json(self) -> dict:
        return {"id": self.id, "latest": self.latest, "backbone": self.backbone, "datasets": list(self.datasets),
                "template": self.template, "hyperparameters": self.hyperparameters, "metrics": self.metrics,
                "command": self.command, "kb_snapshot": self.kb_snapshot, "artifact_path": str(self.artifact_path),
                "created_at": self.created_at.isoformat(), "status": self.status}


def new_model_id(now: datetime | None = None) -> str:
    """Sortable by creation time (to the second), unique through a random suffix."""
    now = now or datetime.now(timezone.utc)
    return f"m-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def _aware(dt: datetime) -> datetime:
    # Always written in UTC; SQLite hands it back without the zone.
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


class ModelRegistry:
    def __init__(self, settings: Settings, bundled_default: Path | None | str = "auto"):
        self.settings = settings
        if bundled_default == "auto":
            # VANER_BUNDLED_MODEL: another folder to fall back on, or "none" to disable the fallback
            # (tests and deployments that must never serve a model nobody registered).
            env = os.environ.get("VANER_BUNDLED_MODEL")
            bundled_default = None if env and env.lower() == "none" else Path(env) if env else BUNDLED_DEFAULT
        self.bundled_default = bundled_default
        if settings.sql_url.startswith("sqlite"):
            settings.ensure_home()
        self.engine = get_engine(settings.sql_url)
        init_tables(self.engine, [ModelRow, ModelAlias])

    # ---- conversion ---------------------------------------------------------------------------
    @staticmethod
    def _record(row: ModelRow, latest_id: str | None) -> ModelRecord:
        return ModelRecord(id=row.id, latest=row.id == latest_id, backbone=row.backbone,
                           datasets=json.loads(row.datasets_json), template=json.loads(row.template_json),
                           hyperparameters=json.loads(row.hyperparameters_json),
                           metrics=json.loads(row.metrics_json), command=row.command, kb_snapshot=row.kb_snapshot,
                           artifact_path=Path(row.artifact_path), created_at=_aware(row.created_at),
                           status=row.status)

    @staticmethod
    def _latest_id(session: Session) -> str | None:
        alias = session.get(ModelAlias, LATEST)
        return alias.model_id if alias else None

    # ---- writes -------------------------------------------------------------------------------
    def register(self, artifact_dir: Path, *, backbone: str, datasets: list[str], template: dict,
                 hyperparameters: dict, metrics: dict, command: str, kb_snapshot: str | None = None,
                 promote: bool = False) -> ModelRecord:
        """Copy the artifact into the models folder and record it; optionally make it ``latest``."""
        src = Path(artifact_dir)
        if not src.is_dir():
            raise NotFound(f"model artifact {src} is not a directory")
        if not (src / "tagger_config.json").exists():
            raise InvalidArgument(f"{src} is not a vaner model artifact (no tagger_config.json)")
        payload = {"datasets": datasets, "template": template, "hyperparameters": hyperparameters,
                   "metrics": metrics}
        encoded = {}
        for key, value in payload.items():
            try:
                encoded[key] = json.dumps(value, sort_keys=True, default=str)
            except (TypeError, ValueError) as exc:
                raise InvalidArgument(f"model {key} is not JSON-serialisable: {exc}") from exc
        now = datetime.now(timezone.utc)
        model_id = new_model_id(now)
        root = self.settings.models_dir
        make_private_dir(root)
        dest = root / model_id
        tmp = root / f".tmp-{model_id}-{os.getpid()}"
        shutil.copytree(src, tmp)
        os.replace(tmp, dest)
        row = ModelRow(id=model_id, backbone=backbone, datasets_json=encoded["datasets"],
                       template_json=encoded["template"], hyperparameters_json=encoded["hyperparameters"],
                       metrics_json=encoded["metrics"], command=command, kb_snapshot=kb_snapshot,
                       artifact_path=str(dest), created_at=now, status="ready")
        try:
            with Session(self.engine) as s:
                s.add(row)
                if promote:
                    self._set_latest(s, model_id)
                s.commit()
        except Exception:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        log.info("registered model %s from %s", model_id, src)
        return self.resolve(model_id)

    @staticmethod
    def _set_latest(session: Session, model_id: str) -> None:
        upsert_row(session, ModelAlias, {"name": LATEST}, {"model_id": model_id})

    def promote(self, model_id: str) -> ModelRecord:
        with Session(self.engine) as s:
            if s.get(ModelRow, model_id) is None:
                raise NotFound(self._unknown_message(s, model_id))
            self._set_latest(s, model_id)
            s.commit()
        return self.resolve(model_id)

    def update_metrics(self, model_id: str, metrics: dict) -> ModelRecord:
        """Merge ``metrics`` into the stored ones (e.g. add ``test`` results after ``vaner eval``)."""
        with Session(self.engine) as s:
            row = s.get(ModelRow, model_id, with_for_update=True)
            if row is None:
                raise NotFound(self._unknown_message(s, model_id))
            merged = json.loads(row.metrics_json)
            for key, value in metrics.items():
                if isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
            row.metrics_json = json.dumps(merged, sort_keys=True, default=str)
            s.add(row)
            s.commit()
        return self.resolve(model_id)

    # ---- reads --------------------------------------------------------------------------------
    def _unknown_message(self, session: Session, ref: str) -> str:
        ids = session.exec(select(ModelRow.id).order_by(*_NEWEST_FIRST).limit(5)).all()
        known = ", ".join(ids) if ids else "none registered (train one with `vaner train`)"
        return f"unknown model version {ref!r}; latest versions: {known}"

    def resolve(self, ref: str = LATEST) -> ModelRecord:
        ref = (ref or LATEST).strip()
        with Session(self.engine) as s:
            latest_id = self._latest_id(s)
            if ref == LATEST:
                if latest_id is None:
                    # No alias yet: the newest version, else the bundled default.
                    newest = s.exec(select(ModelRow).order_by(*_NEWEST_FIRST).limit(1)).first()
                    if newest is not None:
                        return self._record(newest, latest_id)
                    s.close()
                    return self._register_bundled()
                row = s.get(ModelRow, latest_id)
            else:
                row = s.get(ModelRow, ref)
            if row is None:
                raise NotFound(self._unknown_message(s, ref))
            return self._record(row, latest_id)

    def _register_bundled(self) -> ModelRecord:
        bundled = self.bundled_default
        if bundled is None or not (bundled / "tagger_config.json").exists():
            raise NotFound("no model registered and no bundled default model found; "
                           "train one with `vaner train` or pass --model PATH")
        # Two processes starting on a fresh install must not both register the default.
        with exclusive_lock(self.settings, "registry-bundled", wait=True):
            with Session(self.engine) as s:
                latest_id = self._latest_id(s)
                existing = s.get(ModelRow, latest_id) if latest_id else None
                if existing is not None:
                    return self._record(existing, latest_id)
            return self._register_bundled_locked(bundled)

    def _register_bundled_locked(self, bundled: Path) -> ModelRecord:
        card_path = bundled / MODEL_CARD
        card = json.loads(card_path.read_text()) if card_path.exists() else {}
        cfg = json.loads((bundled / "tagger_config.json").read_text()).get("model", {})
        log.info("registering the bundled default model from %s", bundled)
        return self.register(
            bundled, backbone=card.get("backbone", cfg.get("backbone", "smollm2-135m")),
            datasets=list(card.get("datasets", [])), template=card.get("template", cfg.get("template", {})),
            hyperparameters=card.get("hyperparameters", {}), metrics=card.get("metrics", {}),
            command=card.get("command", ""), kb_snapshot=card.get("kb_snapshot"), promote=True)

    def list(self) -> list[ModelRecord]:
        """Newest first (ids sort by creation time)."""
        with Session(self.engine) as s:
            latest_id = self._latest_id(s)
            rows = s.exec(select(ModelRow).order_by(*_NEWEST_FIRST)).all()
            return [self._record(r, latest_id) for r in rows]


def resolve_model(ref: str, registry: Callable[[], ModelRegistry], *, allow_path: bool) -> ModelRecord:
    """The one model resolution of ``vaner extract|eval`` and the tagger service.

    A version id or ``latest`` goes through the registry. A saved model folder is accepted only
    where ``allow_path`` (the CLI user's own files, the server's own config), never from a network
    caller, who must not make the server read arbitrary paths. ``registry`` is called only when
    needed, so ``--model PATH`` never opens the database.
    """
    ref = (ref or LATEST).strip()
    if allow_path:
        path = Path(ref).expanduser()
        if path.is_dir() and ((path / "tagger_config.json").exists() or "/" in ref or ref.startswith(".")):
            if not (path / "tagger_config.json").exists():
                raise InvalidArgument(f"{path} is not a vaner model folder (no tagger_config.json)")
            return ModelRecord.for_folder(path)
    elif "/" in ref or "\\" in ref or len(ref) > 200:
        raise NotFound(f"unknown model version {ref[:80]!r}")
    return registry().resolve(ref)
