"""Model registry on SQLite (per-test home) and on the real PostgreSQL server (marked postgres)."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest

from tagger.registry import ModelRegistry, new_model_id
from vaner.errors import InvalidArgument, NotFound
from vaner.settings import Settings

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def fake_artifact(root: Path, marker: str = "x") -> Path:
    """A folder with the files a VanerTagger.save leaves (contents do not matter to the registry)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tagger_config.json").write_text(json.dumps({"format": 1, "model": {"backbone": "tiny"}}))
    (root / "adapter").mkdir(exist_ok=True)
    (root / "adapter" / "adapter_config.json").write_text("{}")
    (root / "head.safetensors").write_text(marker)
    return root


def _register(reg: ModelRegistry, art: Path, **kw):
    args = dict(backbone="tiny", datasets=["ncbi"], template={"with_dataset": "t {type} {dataset}"},
                hyperparameters={"lr": 1e-4}, metrics={"dev": {"f1": 50.0}}, command="vaner train --datasets ncbi")
    args.update(kw)
    return reg.register(art, **args)


@pytest.fixture()
def sqlite_registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(Settings(home=tmp_path / "home"), bundled_default=None)


@pytest.fixture()
def pg_registry(tmp_path) -> ModelRegistry:
    try:
        import psycopg

        psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"PostgreSQL NOT REACHABLE at 127.0.0.1:5432 ({exc}); postgres registry tests skipped")
    return ModelRegistry(Settings(home=tmp_path / "home", db_url=PG_URL), bundled_default=None)


def test_ids_sort_by_time_and_are_unique():
    from datetime import datetime, timezone

    a = new_model_id(datetime(2026, 1, 1, tzinfo=timezone.utc))
    b = new_model_id(datetime(2026, 1, 2, tzinfo=timezone.utc))
    assert a < b and a.startswith("m-20260101-000000-")
    assert len({new_model_id() for _ in range(200)}) == 200


def _exercise(reg: ModelRegistry, tmp_path: Path) -> None:
    art = fake_artifact(tmp_path / "run" / "best", "v1")
    r1 = _register(reg, art, promote=True)
    assert r1.latest and r1.artifact_path.is_dir() and r1.artifact_path != art
    assert (r1.artifact_path / "head.safetensors").read_text() == "v1"
    assert r1.datasets == ["ncbi"] and r1.hyperparameters == {"lr": 1e-4}
    assert reg.resolve("latest").id == r1.id
    r2 = _register(reg, fake_artifact(tmp_path / "run2", "v2"), kb_snapshot="s-1")
    assert not r2.latest and r2.kb_snapshot == "s-1"
    assert reg.resolve("latest").id == r1.id  # registering alone does not promote
    assert reg.promote(r2.id).latest
    assert reg.resolve().id == r2.id and not reg.resolve(r1.id).latest
    upd = reg.update_metrics(r1.id, {"test": {"ncbi": {"f1": 80.0}}})
    assert upd.metrics == {"dev": {"f1": 50.0}, "test": {"ncbi": {"f1": 80.0}}}
    upd = reg.update_metrics(r1.id, {"test": {"bc2gm": {"f1": 70.0}}})
    assert set(upd.metrics["test"]) == {"ncbi", "bc2gm"}  # merged, not replaced
    ids = [r.id for r in reg.list()]
    assert r1.id in ids and r2.id in ids
    js = reg.resolve(r2.id).to_json()
    assert js["id"] == r2.id and js["latest"] is True and isinstance(js["created_at"], str)
    json.dumps(js)
    with pytest.raises(NotFound, match="unknown model version 'm-nope"):
        reg.resolve("m-nope")
    with pytest.raises(NotFound):
        reg.promote("m-nope-" + uuid.uuid4().hex)
    with pytest.raises(NotFound):
        reg.update_metrics("m-nope", {})


def test_sqlite_registry_lifecycle(sqlite_registry, tmp_path):
    _exercise(sqlite_registry, tmp_path)
    assert not list(sqlite_registry.settings.models_dir.glob(".tmp-*"))  # atomic copies leave no temp dirs


@pytest.mark.postgres
def test_postgres_registry_lifecycle(pg_registry, tmp_path):
    _exercise(pg_registry, tmp_path)


def test_empty_registry_latest_is_a_clear_error(sqlite_registry):
    assert sqlite_registry.list() == []
    with pytest.raises(NotFound, match="no model registered"):
        sqlite_registry.resolve("latest")


def test_register_rejects_non_artifacts(sqlite_registry, tmp_path):
    with pytest.raises(NotFound):
        _register(sqlite_registry, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgument, match="not a vaner model"):
        _register(sqlite_registry, tmp_path / "empty")
    assert sqlite_registry.list() == []


def test_latest_without_alias_is_newest(sqlite_registry, tmp_path):
    _register(sqlite_registry, fake_artifact(tmp_path / "a"))
    r2 = _register(sqlite_registry, fake_artifact(tmp_path / "b"))
    assert sqlite_registry.resolve("latest").id == r2.id


def test_bundled_default_registers_itself_once(tmp_path):
    bundled = fake_artifact(tmp_path / "models" / "default", "bundled")
    (bundled / "model_card.json").write_text(json.dumps({
        "backbone": "smollm2-135m", "datasets": ["ncbi", "bc2gm"], "metrics": {"test": {"ncbi": {"f1": 85.0}}},
        "command": "vaner train --datasets ncbi,bc2gm"}))
    reg = ModelRegistry(Settings(home=tmp_path / "home"), bundled_default=bundled)
    rec = reg.resolve("latest")
    assert rec.latest and rec.backbone == "smollm2-135m" and rec.datasets == ["ncbi", "bc2gm"]
    assert rec.command.startswith("vaner train") and rec.metrics["test"]["ncbi"]["f1"] == 85.0
    assert (rec.artifact_path / "head.safetensors").read_text() == "bundled"
    assert reg.resolve("latest").id == rec.id and len(reg.list()) == 1


def test_concurrent_promotes_leave_exactly_one_latest(sqlite_registry, tmp_path):
    recs = [_register(sqlite_registry, fake_artifact(tmp_path / f"a{i}")) for i in range(4)]
    errors = []

    def worker(mid: str) -> None:
        try:
            for _ in range(5):
                sqlite_registry.promote(mid)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(r.id,)) for r in recs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(r.latest for r in sqlite_registry.list()) == 1
