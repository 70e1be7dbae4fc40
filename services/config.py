"""Typed configuration of the service stack: one TOML file for all three services, environment
overrides on top, every value checked once at start-up.

One file for the whole stack is what lets ``vaner serve all`` start three processes that agree on
ports and addresses; environment overrides (``VANER_<SECTION>_<KEY>``, e.g. ``VANER_SERVER_TAGGER_PORT``
or ``VANER_SECURITY_TOKEN_FILE``) are how containers and Kubernetes set per-pod values without
templating the file. Validation refuses to bind a non-loopback address without TLS and a bearer
token, because an open tagger or KB on a network is a data leak and a free GPU.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from clients.base import DEFAULT_DEADLINES
from vaner.errors import InvalidArgument, NotFound
from vaner.settings import Settings

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 with the tomli backport
    import tomli as tomllib  # type: ignore[no-redef]

SERVICES = ("kb", "retrieval", "tagger")
LOOPBACK_NAMES = ("localhost", "ip6-localhost")
MIB = 1024 * 1024


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _port(value: int, name: str) -> None:
    if not 0 <= value <= 65535:
        raise InvalidArgument(f"{name} must be a TCP port (0-65535; 0 picks a free one), not {value}")


@dataclass(frozen=True)
class ServerSection:
    host: str = field(default="127.0.0.1", metadata={"help": "bind address; non-loopback needs TLS + token"})
    kb_port: int = field(default=50051, metadata={"help": "KnowledgeBase service port"})
    retrieval_port: int = field(default=50052, metadata={"help": "Retrieval service port"})
    tagger_port: int = field(default=50053, metadata={"help": "Tagger service port"})
    max_workers: int = field(default=16, metadata={"help": "gRPC handler threads per service"})
    max_receive_message_bytes: int = field(default=16 * MIB, metadata={"help": "largest request accepted"})
    max_send_message_bytes: int = field(default=64 * MIB, metadata={"help": "largest response sent"})
    grace_seconds: float = field(default=15.0, metadata={"help": "time in-flight calls get on shutdown"})
    drain_seconds: float = field(default=5.0, metadata={
        "help": "on SIGTERM, how long health says NOT_SERVING (calls still accepted) before the server stops"})
    health_check_seconds: float = field(default=5.0, metadata={
        "help": "how often dependencies (database, vector store, KB) are probed for health; 0 = never"})
    log_format: str = field(default="json", metadata={"help": "json (one object per line) or text"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING, ERROR"})

    def __post_init__(self) -> None:
        for name in ("kb_port", "retrieval_port", "tagger_port"):
            _port(getattr(self, name), f"server.{name}")
        if self.max_workers < 1:
            raise InvalidArgument("server.max_workers must be >= 1")
        for name in ("max_receive_message_bytes", "max_send_message_bytes"):
            if not 1024 <= getattr(self, name) <= 2**31 - 1:
                raise InvalidArgument(f"server.{name} must be between 1 KiB and 2 GiB")
        for name in ("grace_seconds", "drain_seconds", "health_check_seconds"):
            if getattr(self, name) < 0:
                raise InvalidArgument(f"server.{name} must be >= 0")
        if self.log_format not in ("json", "text"):
            raise InvalidArgument(f"server.log_format must be 'json' or 'text', not {self.log_format!r}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise InvalidArgument(f"server.log_level {self.log_level!r} is not a logging level")

    def port(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))


@dataclass(frozen=True)
class SecuritySection:
    tls_cert: str = field(default="", metadata={"help": "PEM server certificate (chain)"})
    tls_key: str = field(default="", metadata={"help": "PEM private key of tls_cert"})
    tls_client_ca: str = field(default="", metadata={"help": "PEM CA: when set, clients need certificates (mTLS)"})
    token_file: str = field(default="", metadata={"help": "file holding the bearer token clients must send"})

    def __post_init__(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise InvalidArgument("security.tls_cert and security.tls_key go together: set both or neither")
        for name in ("tls_cert", "tls_key", "tls_client_ca", "token_file"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise NotFound(f"security.{name}: {path} is not a file")
        if self.token_file and not self.token():
            raise InvalidArgument(f"security.token_file {self.token_file} is empty")

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    def token(self) -> str | None:
        return Path(self.token_file).read_text().strip() or None if self.token_file else None


@dataclass(frozen=True)
class TaggerSection:
    model: str = field(default="latest", metadata={"help": "model version id, 'latest', or an artifact directory"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, cuda:N or auto"})
    batch_size: int = field(default=32, metadata={"help": "sentences per forward pass"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 = torch's default (all cores)"})
    max_documents: int = field(default=512, metadata={"help": "documents per Extract call"})
    max_text_chars: int = field(default=1_000_000, metadata={"help": "characters per document"})
    max_call_words: int = field(default=200_000, metadata={
        "help": "words per Extract call (per document for ExtractStream); RESOURCE_EXHAUSTED above"})
    reconcile_seconds: float = field(default=30.0, metadata={
        "help": "how often a tagger serving 'latest' checks the registry and switches when it moved; 0 = never"})
    retrieval_address: str = field(default="", metadata={"help": "host:port of Retrieval for Retrain; empty = in-process"})
    kb_address: str = field(default="", metadata={"help": "host:port of the KB for Retrain; empty = in-process"})

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise InvalidArgument("tagger.threads must be >= 0 (0 = torch's default)")
        if min(self.batch_size, self.max_documents, self.max_text_chars, self.max_call_words) < 1:
            raise InvalidArgument("tagger.batch_size, max_documents, max_text_chars and max_call_words must be >= 1")
        if self.reconcile_seconds < 0:
            raise InvalidArgument("tagger.reconcile_seconds must be >= 0 (0 = never)")
        if not self.model.strip():
            raise InvalidArgument("tagger.model must name a version, 'latest' or a directory")


@dataclass(frozen=True)
class RetrievalSection:
    kb_address: str = field(default="", metadata={"help": "host:port of the KB service; empty = same state, in-process"})


@dataclass(frozen=True)
class KbSection:
    max_search_queries: int = field(default=1024, metadata={
        "help": "texts or vectors per Search call (RESOURCE_EXHAUSTED above)"})

    def __post_init__(self) -> None:
        if self.max_search_queries < 1:
            raise InvalidArgument("kb.max_search_queries must be >= 1")


@dataclass(frozen=True)
class IngestSection:
    allowed_roots: tuple[str, ...] = field(default=(), metadata={
        "help": "server directories Ingest may read client-named files from; empty = refuse every path"})

    def __post_init__(self) -> None:
        roots = tuple(str(r) for r in self.allowed_roots)
        for root in roots:
            if not Path(root).is_absolute():
                raise InvalidArgument(f"ingest.allowed_roots: {root!r} is not an absolute path")
        object.__setattr__(self, "allowed_roots", roots)


@dataclass(frozen=True)
class ServeConfig:
    server: ServerSection = field(default_factory=ServerSection)
    security: SecuritySection = field(default_factory=SecuritySection)
    tagger: TaggerSection = field(default_factory=TaggerSection)
    retrieval: RetrievalSection = field(default_factory=RetrievalSection)
    kb: KbSection = field(default_factory=KbSection)
    ingest: IngestSection = field(default_factory=IngestSection)
    deadlines: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_DEADLINES))
    home: str = field(default="", metadata={"help": "state directory; empty = $VANER_HOME or the default"})
    db_url: str = field(default="", metadata={"help": "SQL URL; empty = SQLite under home"})
    qdrant_url: str = field(default="", metadata={"help": "Qdrant URL; empty = embedded"})
    source: str = field(default="", metadata={"help": "the TOML file this came from, for messages"})

    def __post_init__(self) -> None:
        merged = dict(DEFAULT_DEADLINES)
        merged.update({str(k): float(v) for k, v in self.deadlines.items()})
        if any(v <= 0 for v in merged.values()):
            raise InvalidArgument("deadlines must be > 0 seconds")
        object.__setattr__(self, "deadlines", merged)
        self.check_exposure()

    def check_exposure(self) -> None:
        """Refuse to listen beyond this machine without TLS and a token."""
        host = self.server.host
        if is_loopback(host):
            return
        missing = [what for what, ok in (("TLS (security.tls_cert + tls_key)", self.security.tls),
                                         ("a bearer token (security.token_file)", bool(self.security.token_file)))
                   if not ok]
        if missing:
            raise InvalidArgument(f"refusing to bind {host}: a non-loopback address needs {' and '.join(missing)}; "
                                  "bind 127.0.0.1 or configure them")

    def deadline(self, rpc: str) -> float:
        return self.deadlines.get(rpc, self.deadlines["default"])

    def address(self, service: str) -> str:
        """Where a sibling service of this stack listens, as clients should dial it."""
        host = self.server.host
        if host in ("0.0.0.0", "::", "[::]"):
            host = "127.0.0.1"
        return f"{host}:{self.server.port(service)}"

    def settings(self) -> Settings:
        return Settings.from_env(home=self.home or None, db_url=self.db_url or None, qdrant_url=self.qdrant_url or None)

    # ---- loading ------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None, env: Mapping[str, str] | None = None,
             overrides: Mapping[str, Any] | None = None) -> ServeConfig:
        """TOML file, then ``VANER_<SECTION>_<KEY>`` environment values, then explicit overrides
        (``{"server.host": ...}`` from CLI flags); later wins."""
        env = os.environ if env is None else env
        data: dict[str, Any] = {}
        source = ""
        if path is None and env.get("VANER_CONFIG"):
            path = env["VANER_CONFIG"]
        if path:
            p = Path(path)
            if not p.is_file():
                raise NotFound(f"config file {p} not found")
            try:
                data = tomllib.loads(p.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise InvalidArgument(f"{p}: not valid TOML: {exc}") from exc
            source = str(p)
        return cls.from_dict(data, env=env, overrides=overrides, source=source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None, source: str = "") -> ServeConfig:
        env = {} if env is None else env
        where = source or "config"
        sections = {"server": ServerSection, "security": SecuritySection, "tagger": TaggerSection,
                    "retrieval": RetrievalSection, "kb": KbSection, "ingest": IngestSection}
        top_keys = {"home", "db_url", "qdrant_url"}
        unknown = set(data) - set(sections) - top_keys - {"deadlines"}
        if unknown:
            raise InvalidArgument(f"{where}: unknown key(s) {sorted(unknown)}")
        flat_over = dict(overrides or {})
        built: dict[str, Any] = {}
        for name, klass in sections.items():
            raw = data.get(name, {})
            if not isinstance(raw, Mapping):
                raise InvalidArgument(f"{where}: [{name}] must be a table")
            known = {f.name: f for f in fields(klass)}
            bad = set(raw) - set(known)
            if bad:
                raise InvalidArgument(f"{where}: unknown key(s) in [{name}]: {sorted(bad)}")
            values = dict(raw)
            for key, f in known.items():
                env_key = f"VANER_{name}_{key}".upper()
                if env.get(env_key, "") != "":
                    values[key] = env[env_key]
                if flat_over.get(f"{name}.{key}") is not None:
                    values[key] = flat_over[f"{name}.{key}"]
                if key in values:
                    values[key] = _coerce(values[key], f.type, f"{name}.{key}")
            built[name] = klass(**values)
        deadlines = dict(data.get("deadlines", {}))
        for key, value in env.items():
            if key.startswith("VANER_DEADLINES_") and value:
                rpc = key[len("VANER_DEADLINES_"):]
                match = next((k for k in DEFAULT_DEADLINES if k.upper() == rpc), rpc.lower())
                deadlines[match] = _coerce(value, "float", f"deadlines.{match}")
        tops = {k: str(data.get(k, "")) for k in top_keys}
        for k in top_keys:
            if flat_over.get(k) is not None:
                tops[k] = str(flat_over[k])
        return cls(**built, deadlines=deadlines, source=source, **tops)

    def with_overrides(self, **section_values: Any) -> ServeConfig:
        """``cfg.with_overrides(server={"tagger_port": 0})``: a validated copy."""
        changes = {}
        for name, values in section_values.items():
            changes[name] = replace(getattr(self, name), **values) if isinstance(values, dict) else values
        return replace(self, **changes)

    def to_toml(self) -> str:
        """The effective configuration as TOML, so ``serve all`` hands children exactly what it
        validated (flags and environment included)."""
        lines = []
        for key in ("home", "db_url", "qdrant_url"):
            if getattr(self, key):
                lines.append(f"{key} = {_toml_value(getattr(self, key))}")
        for name in ("server", "security", "tagger", "retrieval", "kb", "ingest"):
            lines.append(f"\n[{name}]")
            section = getattr(self, name)
            for f in fields(section):
                lines.append(f"{f.name} = {_toml_value(getattr(section, f.name))}")
        lines.append("\n[deadlines]")
        lines += [f"{k} = {float(v)}" for k, v in sorted(self.deadlines.items())]
        return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    s = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def _coerce(value: Any, type_name: Any, key: str) -> Any:
    t = str(type_name)
    if t.startswith("tuple[str"):  # a TOML array, or os.pathsep-separated in the environment
        if isinstance(value, str):
            return tuple(v for v in value.split(os.pathsep) if v)
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise InvalidArgument(f"{key}: {value!r} is not a list of strings")
    try:
        if t == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if t == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if t == "bool":
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() in ("1", "true", "yes", "on")
        return str(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{key}: {value!r} is not a valid {t}") from exc
