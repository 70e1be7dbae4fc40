"""Generate the gRPC Python code from ``protos/`` into ``vaner/v1/`` (package ``vaner.v1``).

Run by the build (setup.py's build_py, also for editable installs) and by hand with
``python -m vaner.protogen``; generated files are never committed, so they always match the
.proto files.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def generate(out_root: Path = ROOT) -> list[Path]:
    from grpc_tools import protoc

    try:
        import importlib.resources as resources

        well_known = str(resources.files("grpc_tools") / "_proto")
    except Exception:  # pragma: no cover - very old grpc_tools
        import pkg_resources

        well_known = pkg_resources.resource_filename("grpc_tools", "_proto")
    protos = sorted(PROTO_ROOT.glob("vaner/v1/*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_ROOT}")
    args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}",
            f"--python_out={out_root}", f"--pyi_out={out_root}", f"--grpc_python_out={out_root}",
            *[str(p) for p in protos]]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    pkg = out_root / "vaner" / "v1"
    (pkg / "__init__.py").write_text('"""Generated from protos/vaner/v1 by vaner.protogen."""\n')
    return sorted(pkg.glob("*.py"))


if __name__ == "__main__":
    for path in generate():
        print(path, file=sys.stderr)
