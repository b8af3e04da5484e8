"""Build script of dqd-client; build_py (and sdist) regenerate dqd_client/_proto from ../../protos."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE / ".." / ".." / "protos"
GEN_SCRIPT = HERE / ".." / ".." / "scripts" / "gen_protos.py"
PROTO_OUT = HERE / "dqd_client" / "_proto"


def generate_protos() -> None:
    """Regenerate the stubs with scripts/gen_protos.py when the protos are there, else keep them."""
    have_stubs = (PROTO_OUT / "detection_pb2.py").exists()
    if not PROTO_ROOT.is_dir() or not GEN_SCRIPT.is_file():
        if have_stubs:
            return  # building from an sdist: the generated stubs travel with it
        raise SystemExit(f"cannot build dqd-client: no protos at {PROTO_ROOT.resolve()} "
                         f"and no generated stubs in {PROTO_OUT}")
    spec = importlib.util.spec_from_file_location("_dqd_gen_protos", GEN_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        module.generate(PROTO_OUT, PROTO_ROOT.resolve())
    except ImportError as exc:  # grpcio-tools missing
        if not have_stubs:
            raise SystemExit(f"cannot generate the protobuf stubs: {exc} (pip install grpcio-tools)") from exc
        print(f"warning: keeping the existing stubs in {PROTO_OUT}: {exc}")


class BuildPy(build_py):
    """build_py that first regenerates the gRPC/protobuf stubs."""

    def run(self) -> None:
        generate_protos()
        super().run()


class SDist(sdist):
    """sdist that ships freshly generated stubs (the protos are outside this directory)."""

    def run(self) -> None:
        generate_protos()
        super().run()


if not (PROTO_OUT / "detection_pb2.py").exists():
    generate_protos()  # the package dir must exist before egg_info/metadata, which run first

VERSION = re.search(r'__version__ = "([^"]+)"',
                    (HERE / "dqd_client" / "_version.py").read_text()).group(1)  # type: ignore[union-attr]

setup(
    name="dqd-client",
    version=VERSION,
    description="Python client and CLI of dqd, the Data Quality Detection gRPC service",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["dqd_client", "dqd_client._proto"],
    package_data={"dqd_client": ["py.typed"], "dqd_client._proto": ["*.pyi"]},
    install_requires=[
        "grpcio>=1.85.1",  # the generated *_pb2_grpc.py refuses older grpcio
        "grpcio-health-checking>=1.85.1",
        "protobuf>=7.35.1,<8",
        "pyarrow>=19",  # pa.concat_batches, RecordBatch.cast
    ],
    extras_require={"cli": ["tqdm"]},
    entry_points={"console_scripts": ["dqd-client = dqd_client._cli:main"]},
    cmdclass={"build_py": BuildPy, "sdist": SDist},
    zip_safe=False,
)
