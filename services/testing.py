"""Helpers for tests and benchmarks that run services as real processes on real loopback ports.

Kept in the package (not in tests/) so the load benchmark and the test suite start services the
same way; nothing here is used by the services themselves.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parent.parent


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the process that started it dies (Linux), so a
    killed test run or supervisor leaves no orphan services holding ports."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(address: str, timeout: float = 60.0, service: str = "", proc: subprocess.Popen | None = None,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
    """Poll standard health checking until SERVING; fail early if the process exited."""
    end = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"service at {address} exited with {proc.returncode} before serving")
        channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
            if resp.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError as exc:
            last = exc
        finally:
            channel.close()
        time.sleep(0.1)
    raise TimeoutError(f"service at {address} not SERVING within {timeout}s ({last})")


class ServiceProcess:
    """``vaner serve <service>`` in a child process, with its log captured to a file."""

    def __init__(self, service: str, home: Path, port: int | None = None, config: Path | None = None,
                 extra_args: Sequence[str] = (), env: dict[str, str] | None = None, log_dir: Path | None = None):
        self.service = service
        self.home = Path(home)
        self.port = port or free_port()
        self.config = config
        self.extra_args = list(extra_args)
        self.env = {**os.environ, "VANER_HOME": str(self.home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                    "TOKENIZERS_PARALLELISM": "false", "VANER_TAGGER_THREADS": os.environ.get("VANER_TAGGER_THREADS", "1"),
                    # no load balancer to wait for in a test: stop without the NOT_SERVING window
                    "VANER_SERVER_DRAIN_SECONDS": os.environ.get("VANER_SERVER_DRAIN_SECONDS", "0"),
                    "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
        self.env.pop("VANER_CONFIG", None)
        self.log_path = (log_dir or self.home) / f"{service}-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "vaner.cli", "serve", self.service, "--port", str(self.port)]
        if self.config:
            cmd += ["--config", str(self.config)]
        return cmd + self.extra_args

    def start(self, wait: bool = True, timeout: float = 90.0) -> ServiceProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.command(), env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=str(REPO), preexec_fn=die_with_parent)
        if wait:
            self.wait(timeout)
        return self

    def wait(self, timeout: float = 90.0) -> None:
        try:
            wait_serving(self.address, timeout, proc=self.proc)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n--- {self.service} log ---\n{self.log()[-4000:]}") from exc

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> ServiceProcess:
        return self if self.proc is not None and self.proc.poll() is None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class DocumentBackend:
    """A serving back end (tagger.serving.Backend) over a plain ``(documents, categories) ->
    documents`` function, one unit per document: fakes for tests of the serving core and the
    servicer that need no model. ``words`` counts whitespace-separated words."""

    def __init__(self, fn: Callable[[list[Any], list[Any]], list[Any]]):
        self.fn = fn

    def plan(self, documents: list[Any], categories: list[Any], should_stop: Any = None) -> Any:
        from tagger.serving import CallPlan

        units = [(doc, tuple(categories)) for doc in documents]
        return CallPlan(iter(units), sum(len(d.text.split()) for d in documents), list)

    def run(self, units: list[Any]) -> list[Any]:
        outputs: list[Any] = [None] * len(units)
        for cats in dict.fromkeys(c for _, c in units):  # one call per category set, in order
            idx = [i for i, (_, c) in enumerate(units) if c == cats]
            for i, out in zip(idx, self.fn([units[i][0] for i in idx], list(cats)), strict=True):
                outputs[i] = out
        return outputs


def make_tiny_model(backbone_dir: Path, artifact_dir: Path, seed: int = 0, tag_every_word: bool = False,
                    multi_type: bool = False) -> Path:
    """A loadable model artifact over a tiny random LLaMA (see tests/conftest.py), single-type or
    ``multi_type``. A random model may tag nothing; ``tag_every_word`` gives it a head that ignores
    its input and says B for every word (in every category's head of a multi-type model), so each
    word becomes a one-word entity of each asked type: deterministic spans for tests of what comes
    after tagging (linking), through the real model path."""
    from tagger.config import TaggerConfig
    from tagger.model import VanerTagger

    model = VanerTagger.create(TaggerConfig(backbone=str(backbone_dir), multi_type=multi_type), device="cpu",
                               seed=seed)
    if tag_every_word:
        import torch

        from vaner.corpus import TAGS

        with torch.no_grad():
            model.head.weight.zero_()
            per_head = torch.tensor([10.0 if t == "B" else 0.0 for t in TAGS])
            model.head.bias.copy_(per_head.repeat(model.head.out_features // len(TAGS)))
    return model.save(artifact_dir)


def register_model(home: Path, artifact_dir: Path, promote: bool = True, metrics: dict | None = None):  # noqa: ANN201
    from tagger.registry import ModelRegistry
    from vaner.settings import Settings

    reg = ModelRegistry(Settings(home=home), bundled_default=None)
    return reg.register(artifact_dir, backbone="tiny", datasets=[], template={}, hyperparameters={},
                        metrics=metrics or {}, command="test", promote=promote)


def slice_conll(src: Path, dest: Path, sentences: int) -> None:
    """Copy the first ``sentences`` sentences of a CoNLL file, so real-process tests train in seconds."""
    out, n = [], 0
    for line in src.read_text(encoding="utf-8").splitlines():
        out.append(line)
        if not line.strip():
            n += 1
            if n >= sentences:
                break
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(out) + "\n", encoding="utf-8")
