from __future__ import annotations

import pytest

from services.config import ServeConfig, is_loopback
from vaner.errors import InvalidArgument, NotFound


def test_defaults_are_loopback_and_valid():
    cfg = ServeConfig.load(None, env={})
    assert cfg.server.host == "127.0.0.1"
    assert (cfg.server.kb_port, cfg.server.retrieval_port, cfg.server.tagger_port) == (50051, 50052, 50053)
    assert cfg.deadline("Extract") == 120.0 and cfg.deadline("Whatever") == 30.0
    assert cfg.address("tagger") == "127.0.0.1:50053"


def test_toml_then_env_then_overrides(tmp_path):
    f = tmp_path / "vaner.toml"
    f.write_text('home = "/srv/vaner"\n[server]\ntagger_port = 6000\nmax_workers = 4\n'
                 '[tagger]\nmodel = "m-1"\nbatch_size = 8\n[deadlines]\nExtract = 5\n')
    cfg = ServeConfig.load(f, env={"VANER_TAGGER_BATCH_SIZE": "16", "VANER_SERVER_MAX_WORKERS": "",
                                   "VANER_DEADLINES_EXTRACT": "7"},
                           overrides={"server.tagger_port": 7000, "tagger.model": None})
    assert cfg.server.tagger_port == 7000 and cfg.server.max_workers == 4
    assert cfg.tagger.model == "m-1" and cfg.tagger.batch_size == 16
    assert cfg.deadline("Extract") == 7.0 and cfg.home == "/srv/vaner"
    again = ServeConfig.from_dict(__import__("tomllib").loads(cfg.to_toml()), env={})
    assert again.server == cfg.server and again.tagger == cfg.tagger and again.deadlines == cfg.deadlines


@pytest.mark.parametrize("text, needle", [
    ("[server]\nport = 1\n", "unknown key"),
    ("[nope]\n", "unknown key"),
    ("[server]\ntagger_port = 70000\n", "TCP port"),
    ("[server]\ntagger_port = \"abc\"\n", "not a valid int"),
    ("[server]\nlog_format = \"xml\"\n", "log_format"),
    ("[server]\nmax_receive_message_bytes = 10\n", "1 KiB"),
    ("[tagger]\nbatch_size = 0\n", ">= 1"),
    ("[deadlines]\nExtract = 0\n", "> 0"),
    ("[security]\ntls_cert = \"/x.pem\"\n", "go together"),
    ("server = 3\n", "must be a table"),
    ("not toml ===", "not valid TOML"),
])
def test_invalid_configs_are_refused_clearly(tmp_path, text, needle):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(InvalidArgument, match=needle):
        ServeConfig.load(f, env={})


def test_missing_files(tmp_path):
    with pytest.raises(NotFound):
        ServeConfig.load(tmp_path / "nope.toml", env={})
    with pytest.raises(NotFound, match="token_file"):
        ServeConfig.from_dict({"security": {"token_file": str(tmp_path / "nope")}}, env={})


def test_non_loopback_needs_tls_and_token(tmp_path):
    with pytest.raises(InvalidArgument, match="refusing to bind 0.0.0.0.*TLS.*token"):
        ServeConfig.from_dict({"server": {"host": "0.0.0.0"}}, env={})
    token = tmp_path / "token"
    token.write_text("abc\n")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("y")
    with pytest.raises(InvalidArgument, match="TLS"):
        ServeConfig.from_dict({"server": {"host": "10.0.0.5"}, "security": {"token_file": str(token)}}, env={})
    with pytest.raises(InvalidArgument, match="token"):
        ServeConfig.from_dict({"server": {"host": "10.0.0.5"},
                               "security": {"tls_cert": str(cert), "tls_key": str(key)}}, env={})
    cfg = ServeConfig.from_dict({"server": {"host": "0.0.0.0"}}, env={"VANER_SECURITY_TOKEN_FILE": str(token),
                                                                    "VANER_SECURITY_TLS_CERT": str(cert),
                                                                    "VANER_SECURITY_TLS_KEY": str(key)})
    assert cfg.security.token() == "abc" and cfg.address("kb") == "127.0.0.1:50051"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(InvalidArgument, match="empty"):
        ServeConfig.from_dict({"security": {"token_file": str(empty)}}, env={})


@pytest.mark.parametrize("host, expected", [("127.0.0.1", True), ("localhost", True), ("::1", True), ("[::1]", True),
                                            ("127.0.0.2", True), ("0.0.0.0", False), ("::", False),
                                            ("example.org", False), ("10.1.2.3", False)])
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


def test_cli_flags_override(tmp_path, monkeypatch):
    import argparse

    from services.cli import config_from_args, register

    monkeypatch.delenv("VANER_CONFIG", raising=False)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve", "all", "--port", "7100", "--model", "m-2"])
    cfg = config_from_args(args)
    assert (cfg.server.kb_port, cfg.server.retrieval_port, cfg.server.tagger_port) == (7100, 7101, 7102)
    assert cfg.tagger.model == "m-2"
    with pytest.raises(InvalidArgument, match="refusing"):
        config_from_args(parser.parse_args(["serve", "tagger", "--host", "0.0.0.0"]))


def test_kb_ingest_and_shutdown_sections(tmp_path):
    cfg = ServeConfig.load(None, env={})
    assert cfg.ingest.allowed_roots == () and cfg.kb.max_search_queries == 1024  # refuse every path by default
    assert cfg.server.drain_seconds == 5.0 and cfg.server.health_check_seconds == 5.0
    f = tmp_path / "vaner.toml"
    f.write_text('[ingest]\nallowed_roots = ["/data/umls", "/data/conll"]\n[kb]\nmax_search_queries = 64\n'
                 '[server]\ndrain_seconds = 2.5\n')
    cfg = ServeConfig.load(f, env={})
    assert cfg.ingest.allowed_roots == ("/data/umls", "/data/conll") and cfg.kb.max_search_queries == 64
    assert cfg.server.drain_seconds == 2.5
    again = ServeConfig.from_dict(__import__("tomllib").loads(cfg.to_toml()), env={})
    assert again.ingest == cfg.ingest and again.kb == cfg.kb and again.server == cfg.server
    env = ServeConfig.load(None, env={"VANER_INGEST_ALLOWED_ROOTS": "/a:/b", "VANER_KB_MAX_SEARCH_QUERIES": "8"})
    assert env.ingest.allowed_roots == ("/a", "/b") and env.kb.max_search_queries == 8
    for bad, needle in (({"ingest": {"allowed_roots": ["data"]}}, "not an absolute path"),
                        ({"ingest": {"allowed_roots": "/data"}}, None),
                        ({"ingest": {"allowed_roots": [1]}}, "not a list of strings"),
                        ({"kb": {"max_search_queries": 0}}, ">= 1"),
                        ({"server": {"drain_seconds": -1}}, "drain_seconds must be >= 0")):
        if needle is None:  # one string is one root (as in the environment)
            assert ServeConfig.from_dict(bad, env={}).ingest.allowed_roots == ("/data",)
            continue
        with pytest.raises(InvalidArgument, match=needle):
            ServeConfig.from_dict(bad, env={})


def test_cli_ingest_roots_and_drain(monkeypatch):
    import argparse

    from services.cli import config_from_args, register

    monkeypatch.delenv("VANER_CONFIG", raising=False)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    cfg = config_from_args(parser.parse_args(["serve", "kb", "--ingest-root", "/data/umls", "--ingest-root", "/x",
                                              "--drain-seconds", "0"]))
    assert cfg.ingest.allowed_roots == ("/data/umls", "/x") and cfg.server.drain_seconds == 0.0
