"""State vaner creates is private (home 0700, SQLite file 0600); what exists keeps its mode."""

from __future__ import annotations

import os
import stat

from vaner.db import get_engine
from vaner.permissions import warn_if_exposed
from vaner.settings import Settings


def mode(path) -> int:  # noqa: ANN001
    return stat.S_IMODE(os.stat(path).st_mode)


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


def test_exposed_secret_is_reported(tmp_path):
    token = tmp_path / "token"
    token.write_text("x")
    os.chmod(token, 0o640)
    assert warn_if_exposed(token, "token file")
    os.chmod(token, 0o600)
    assert not warn_if_exposed(token, "token file")
