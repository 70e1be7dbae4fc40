"""Where vaner keeps its state, and which servers it talks to.

Everything lives under ``VANER_HOME`` unless a URL points elsewhere: a SQLite file for the SQL
store and an embedded Qdrant (qdrant-edge) directory for vectors. ``VANER_DB_URL`` switches SQL
to PostgreSQL, ``VANER_QDRANT_URL`` switches vectors to a Qdrant server or cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from vaner.errors import InvalidArgument


def default_home() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "vaner"


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=default_home)
    db_url: str | None = field(default=None, metadata={"help": "SQLAlchemy URL; default SQLite in home"})
    qdrant_url: str | None = field(default=None, metadata={"help": "Qdrant server URL; default embedded"})
    qdrant_api_key: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).expanduser())
        if self.db_url is not None and "://" not in self.db_url:
            raise InvalidArgument(f"--db-url {self.db_url!r} is not a URL (e.g. postgresql+psycopg://host/db)")
        if self.qdrant_url is not None and not self.qdrant_url.startswith(("http://", "https://", "grpc://")):
            raise InvalidArgument(f"--qdrant-url {self.qdrant_url!r} must start with http:// or https://")

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Environment first, then explicit overrides (CLI flags) where they are not None."""
        values: dict[str, object] = {}
        if os.environ.get("VANER_HOME"):
            values["home"] = Path(os.environ["VANER_HOME"])
        for key, env in (("db_url", "VANER_DB_URL"), ("qdrant_url", "VANER_QDRANT_URL"),
                         ("qdrant_api_key", "VANER_QDRANT_API_KEY")):
            if os.environ.get(env):
                values[key] = os.environ[env]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def with_home(self, home: Path) -> Settings:
        return replace(self, home=home)

    @property
    def sql_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'vaner.db'}"

    @property
    def qdrant_path(self) -> Path:
        return self.home / "qdrant"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def dbr_dir(self) -> Path:
        return self.home / "dbr"

    @property
    def locks_dir(self) -> Path:
        return self.home / "locks"

    @property
    def runs_dir(self) -> Path:
        """Where training runs land when no output folder is given."""
        return self.home / "runs"

    def ensure_home(self) -> Path:
        """The state directory, created 0700 when vaner creates it (see vaner/permissions.py)."""
        from vaner.permissions import make_private_dir

        return make_private_dir(self.home)

    def ensure(self) -> Settings:
        from vaner.permissions import make_private_dir

        self.ensure_home()
        for d in (self.models_dir, self.dbr_dir, self.locks_dir, self.runs_dir):
            make_private_dir(d)
        return self
