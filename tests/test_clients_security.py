"""Clients against secured servers: TLS + bearer token, retries with backoff on UNAVAILABLE, and
the refusal to bind beyond loopback without TLS and a token."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clients import TaggerClient
from clients.base import ClientOptions, RetryPolicy
from services.config import ServeConfig
from services.server import start_service
from services.tagger_servicer import TaggerServicer
from services.testing import REPO, DocumentBackend, free_port, register_model
from tagger.serving import TaggerCore
from vaner import errors as E
from vaner.settings import Settings
from vaner.v1 import tagger_pb2_grpc


def _backend(path, device, batch):
    return DocumentBackend(lambda docs, cats: list(docs))


def _tagger_builder(home: Path):
    def build(server, config):
        core = TaggerCore(Settings(home=home), backend_factory=_backend)
        core.start()
        tagger_pb2_grpc.add_TaggerServicer_to_server(TaggerServicer(core), server)
        return [core.close]
    return build


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("sec")
    art = root / "art"
    art.mkdir()
    (art / "tagger_config.json").write_text(json.dumps({"model": {}}))
    register_model(root / "home", art)
    return root / "home"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("certs")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem")], check=True, capture_output=True)
    (d / "token").write_text("t0ken-abc\n")
    return d


@pytest.fixture(scope="module")
def secured(home, certs):
    cfg = ServeConfig.from_dict({"security": {"tls_cert": str(certs / "cert.pem"), "tls_key": str(certs / "key.pem"),
                                              "token_file": str(certs / "token")}}, env={})
    running = start_service("tagger", cfg, port=0, builders={"tagger": _tagger_builder(home)})
    yield f"localhost:{running.port}"
    running.stop(1)


def test_tls_and_token_accepted(secured, certs):
    with TaggerClient(secured, tls_ca=str(certs / "cert.pem"), token_file=str(certs / "token"), timeout=10) as c:
        assert c.extract(["hello world"])[0].id == "0"
        assert c.health().ok


@pytest.mark.parametrize("token", [None, "wrong"])
def test_missing_or_wrong_token_is_unauthenticated(secured, certs, token):
    with TaggerClient(secured, tls_ca=str(certs / "cert.pem"), token=token, timeout=10) as c:
        with pytest.raises(E.Unauthenticated):
            c.extract(["hello"])


def test_plaintext_client_cannot_talk_to_tls_server(secured):
    with TaggerClient(secured, token="t0ken-abc", timeout=3, retry=RetryPolicy(max_attempts=1)) as c:
        with pytest.raises(E.Unavailable):
            c.model_info()


def test_retry_with_backoff_until_the_server_comes_up(home):
    port = free_port()
    cfg = ServeConfig.from_dict({}, env={})
    box = {}

    def late_start():
        time.sleep(1.0)
        box["running"] = start_service("tagger", cfg, port=port, builders={"tagger": _tagger_builder(home)})

    t = threading.Thread(target=late_start)
    t.start()
    opts = ClientOptions(timeout=30, retry=RetryPolicy(max_attempts=12, initial_backoff=0.2, max_backoff=1.0))
    try:
        with TaggerClient(f"127.0.0.1:{port}", opts) as c:
            t0 = time.monotonic()
            assert c.model_info().id
            assert time.monotonic() - t0 >= 0.5
    finally:
        t.join()
        box["running"].stop(1)


def test_no_retry_budget_gives_unavailable_fast():
    with TaggerClient(f"127.0.0.1:{free_port()}", timeout=5, retry=RetryPolicy(max_attempts=2)) as c:
        t0 = time.monotonic()
        with pytest.raises(E.Unavailable, match="tagger service at"):
            c.model_info()
        assert time.monotonic() - t0 < 5


def test_retry_delays_are_capped_and_jittered():
    delays = list(RetryPolicy(max_attempts=6, initial_backoff=0.1, max_backoff=0.4).delays())
    assert len(delays) == 5 and all(0 <= d <= 0.4 for d in delays)


def test_serve_refuses_public_bind_without_tls(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vaner.cli", "serve", "tagger", "--host", "0.0.0.0"],
                       cwd=str(REPO), capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "VANER_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2
    assert "refusing to bind 0.0.0.0" in r.stderr and "Traceback" not in r.stderr


def test_deadline_resolution(monkeypatch, tmp_path):
    from clients.base import BaseClient

    c = BaseClient("127.0.0.1:1", deadlines={"Extract": 7, "default": 3})
    assert (c.deadline("Extract"), c.deadline("Other"), c.deadline("Extract", 1.5)) == (7.0, 3.0, 1.5)
    assert BaseClient("127.0.0.1:1").deadline("Retrain") == 24 * 3600.0
    assert BaseClient("127.0.0.1:1", timeout=4).deadline("Retrain") == 4
    token = tmp_path / "tok"
    token.write_text("xyz\n")
    monkeypatch.setenv("VANER_CLIENT_TOKEN_FILE", str(token))
    assert BaseClient("127.0.0.1:1")._metadata == (("authorization", "Bearer xyz"),)
