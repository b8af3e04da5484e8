"""Generate the gRPC/protobuf Python code from protos/ (one command; never edit the output).

    python scripts/gen_protos.py            # both the server's and the client's copy
    python scripts/gen_protos.py OUT_DIR    # one copy into OUT_DIR

grpcio-tools writes ``from dqd.v1 import detection_pb2`` into the service module; the only
post-processing here turns that into a package-relative import so each package carries its
own copy (the descriptors are identical, so server and client can share a process).
"""
from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
TARGETS = (ROOT / "dqd_server" / "_proto", ROOT / "clients" / "python" / "dqd_client" / "_proto")
_ABS_IMPORT = re.compile(r"^from dqd\.v1 import (\w+_pb2)", re.MULTILINE)


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Compile every .proto under ``proto_root`` into the flat package ``out_dir``."""
    from grpc_tools import protoc  # build-time dependency only

    protos = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {proto_root}")
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = ["grpc_tools.protoc", f"-I{proto_root}", f"-I{include}", f"--python_out={tmp}",
                f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", *protos]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed: " + " ".join(args))
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for src in sorted(Path(tmp).rglob("*.py*")):
            text = _ABS_IMPORT.sub(r"from . import \1", src.read_text())
            dst = out_dir / src.name
            dst.write_text(text)
            written.append(dst)
    (out_dir / "__init__.py").write_text('"""Generated from protos/ by scripts/gen_protos.py; do not edit."""\n')
    return written


def main(argv: list[str]) -> None:
    targets = [Path(a) for a in argv] or list(TARGETS)
    for target in targets:
        files = generate(target)
        print(f"generated {len(files)} files in {target}")


if __name__ == "__main__":
    main(sys.argv[1:])
