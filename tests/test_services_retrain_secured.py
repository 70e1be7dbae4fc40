"""``vaner retrain --tagger-address`` against a real tagger process behind TLS and a bearer token:
with the stack's credentials the promoted model is announced and served; without them the model is
still promoted but the command exits non-zero and says what to do, and the tagger catches up with
the registry's ``latest`` on its own (``tagger.reconcile_seconds``). Training is real (the tiny
random LLaMA, two steps, warm-started from the served model as retrains are by default); the KB
is a fake, since ``--dbr none`` only reads a snapshot id."""

from __future__ import annotations

import json
import time

import grpc
import pytest

from clients import TaggerClient
from services.testing import ServiceProcess, make_tiny_model, register_model, wait_serving
from tests.test_clients_security import certs  # noqa: F401 - the self-signed certificate + token fixture
from tests.test_dbr_fakes import FakeKB, write_data_dir


@pytest.fixture()
def secured_tagger(tmp_path, vaner_home, tiny_backbone, certs):  # noqa: F811 - the imported fixture
    register_model(vaner_home, make_tiny_model(tiny_backbone, tmp_path / "m1"))
    cfg = tmp_path / "vaner.toml"
    cfg.write_text(f'[security]\ntls_cert = "{certs / "cert.pem"}"\ntls_key = "{certs / "key.pem"}"\n'
                   f'token_file = "{certs / "token"}"\n[tagger]\nreconcile_seconds = 0.5\n')
    proc = ServiceProcess("tagger", vaner_home, config=cfg, log_dir=tmp_path).start(wait=False)
    try:
        wait_serving(proc.address, 120, proc=proc.proc,
                     credentials=grpc.ssl_channel_credentials((certs / "cert.pem").read_bytes()))
        yield proc
    finally:
        proc.stop()


def test_retrain_on_a_tls_and_token_stack(secured_tagger, certs, tmp_path, monkeypatch, capsys):  # noqa: F811
    import kb_ingest.kb
    from vaner.cli import main

    monkeypatch.setattr(kb_ingest.kb, "KnowledgeBase", lambda settings: FakeKB())
    monkeypatch.delenv("VANER_CLIENT_TOKEN_FILE", raising=False)
    monkeypatch.delenv("VANER_TAGGER_ADDRESS", raising=False)
    data = write_data_dir(tmp_path / "data")
    address = secured_tagger.address
    argv = ["retrain", "--datasets", "ncbi", "--data-dir", str(data), "--dbr", "none", "--json",
            "--tagger-address", address, "--tls-ca", str(certs / "cert.pem"), "--promote-margin", "100",
            "--epochs", "1", "--steps-per-epoch", "2",
            "--batch-size", "2", "--dev-max-sentences", "4", "--device", "cpu", "--threads", "1"]
    client = TaggerClient(address, tls_ca=str(certs / "cert.pem"), token_file=str(certs / "token"), timeout=30)
    try:
        # 1. with the stack's token: promoted, announced, served
        assert main([*argv, "--token-file", str(certs / "token"), "--output-dir", str(tmp_path / "r1")]) == 0
        first = json.loads(capsys.readouterr().out)
        assert first["promoted"] and first["notified"] == "ok"
        assert client.model_info().id == first["model"]
        # 2. without it: promoted in the registry, the tagger refuses the call -> exit 7 and advice
        assert main([*argv, "--output-dir", str(tmp_path / "r2")]) == 7
        captured = capsys.readouterr()
        second = json.loads(captured.out)
        assert second["promoted"] and second["notified"].startswith("failed")
        err = captured.err.strip().splitlines()[-1]
        assert err.startswith("error: model " + second["model"]) and "promoted to latest" in err
        assert "tagger.reconcile_seconds" in err and "--token-file" in err
        # 3. ... and the tagger catches up with the registry by itself
        t0 = time.monotonic()
        while client.model_info().id != second["model"]:
            assert time.monotonic() - t0 < 15, "the tagger never picked up the promoted model"
            time.sleep(0.1)
        assert client.extract(["BRCA1 mutations"])[0].model_version == second["model"]
    finally:
        client.close()
