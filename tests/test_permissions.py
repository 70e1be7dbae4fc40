"""State vaner creates is private (home 0700, SQLite file 0600); what exists keeps its mode."""

from __future__ import annotations

import json
import os
import stat

import pytest

from vaner.db import get_engine
from vaner.locks import exclusive_lock
from vaner.permissions import make_private_dir, warn_if_exposed
from vaner.settings import Settings


def mode(path) -> int:  # noqa: ANN001
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def usual_umask():
    """The common 022 umask, under which a plain mkdir gives 0755: what these tests must not see."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_home_and_database_are_private_when_vaner_creates_them(tmp_path):
    settings = Settings(home=tmp_path / "a" / "home").ensure()
    assert mode(settings.home) == 0o700
    get_engine(settings.sql_url).connect().close()
    assert mode(settings.home / "vaner.db") == 0o600
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    Settings(home=shared).ensure()
    assert mode(shared) == 0o755  # the operator's choice stands


def test_private_dir_makes_every_missing_component_private(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    make_private_dir(shared / "home" / "models")
    assert mode(shared / "home") == mode(shared / "home" / "models") == 0o700
    assert mode(shared) == 0o755  # it existed: left as it was
    make_private_dir(shared / "home" / "models")  # again: nothing to do, no error


def test_state_subfolders_created_on_first_use_are_private(tmp_path):
    from kb_ingest.encoder_build import staging
    from tagger.registry import ModelRegistry

    settings = Settings(home=tmp_path / "fresh").ensure()
    for d in (settings.models_dir, settings.dbr_dir, settings.locks_dir, settings.runs_dir):
        assert mode(d) == 0o700, d
    # each place that creates a state folder itself, on a home where it does not exist yet
    home = tmp_path / "home"
    art = tmp_path / "art"
    art.mkdir()
    (art / "tagger_config.json").write_text(json.dumps({"format": 1}))
    reg = ModelRegistry(Settings(home=home), bundled_default=None)
    assert mode(home) == 0o700
    reg.register(art, backbone="tiny", datasets=["ncbi"], template={}, hyperparameters={}, metrics={}, command="t")
    assert mode(home / "models") == 0o700
    with exclusive_lock(Settings(home=tmp_path / "home2"), "retrain"):
        assert mode(tmp_path / "home2") == mode(tmp_path / "home2" / "locks") == 0o700
    with staging(tmp_path / "home3" / "encoders", "enc-1"):
        assert mode(tmp_path / "home3") == mode(tmp_path / "home3" / "encoders") == 0o700


def test_exposed_secret_is_reported(tmp_path):
    token = tmp_path / "token"
    token.write_text("x")
    os.chmod(token, 0o640)
    assert warn_if_exposed(token, "token file")
    os.chmod(token, 0o600)
    assert not warn_if_exposed(token, "token file")
