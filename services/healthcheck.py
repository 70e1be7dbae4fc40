"""``python -m services.healthcheck HOST:PORT [SERVICE] [--tls-ca PEM]``: exit 0 when SERVING.

For container HEALTHCHECKs and Kubernetes exec probes: Kubernetes' built-in gRPC probe cannot
speak TLS, and binding beyond loopback requires TLS here, so the probe runs this instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", tls_ca: str | None = None, server_name: str | None = None,
          timeout: float = 3.0) -> bool:
    if tls_ca:
        creds = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
        opts = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(address, creds, options=opts)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                             timeout=timeout)
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name}: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
            return False
    ok = resp.status == health_pb2.HealthCheckResponse.SERVING
    if not ok:
        print(f"unhealthy: {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}", file=sys.stderr)
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.healthcheck", description=__doc__.splitlines()[0])
    ap.add_argument("address")
    ap.add_argument("service", nargs="?", default="", help="e.g. vaner.v1.Tagger; empty = the whole server")
    ap.add_argument("--tls-ca", default=None)
    ap.add_argument("--server-name", default=None, help="name in the certificate, when dialling by IP")
    ap.add_argument("--timeout", type=float, default=3.0)
    args = ap.parse_args(argv)
    return 0 if check(args.address, args.service, args.tls_ca, args.server_name, args.timeout) else 1


if __name__ == "__main__":
    raise SystemExit(main())
