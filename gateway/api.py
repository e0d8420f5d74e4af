"""The generated gRPC stubs of proto/intent/gateway/v1/gateway.proto.

`make proto` generates them into gateway/_gen (ignored by git, never edited by hand); when they are missing
or older than the .proto (a checkout used without make), they are generated here on first import.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PROTO = PROTO_DIR / "intent" / "gateway" / "v1" / "gateway.proto"
GEN_DIR = Path(__file__).resolve().parent / "_gen"


def generate(out: Path = GEN_DIR) -> None:
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--grpc_python_out={out}", f"--pyi_out={out}",
            str(PROTO)]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")


def _stale() -> bool:
    built = GEN_DIR / "intent" / "gateway" / "v1" / "gateway_pb2.py"
    return not built.exists() or built.stat().st_mtime < PROTO.stat().st_mtime


if _stale():
    generate()
if str(GEN_DIR) not in sys.path:
    sys.path.insert(0, str(GEN_DIR))

from intent.gateway.v1 import gateway_pb2 as pb  # noqa: E402
from intent.gateway.v1 import gateway_pb2_grpc as pb_grpc  # noqa: E402

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["IntentGatewayService"].full_name

__all__ = ["SERVICE_NAME", "generate", "pb", "pb_grpc"]
