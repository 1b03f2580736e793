"""Generates convgen/v1/*_pb2.py, *_pb2_grpc.py and their .pyi stubs from protos/convgen/v1/*.proto."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = Path("convgen") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _plugin(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        raise SystemExit(f"{name} not found next to {sys.executable}; install the test extra (mypy-protobuf)")
    return path


def generate(out_dir: Path) -> list[Path]:
    """Runs protoc into out_dir and returns the generated files, relative to out_dir."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(
        p.relative_to(out_dir) for p in (out_dir / PACKAGE_DIR).iterdir() if p.name.endswith(GENERATED_SUFFIXES)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="fail if the committed code differs from a fresh generation"
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / PACKAGE_DIR).mkdir(parents=True)
        fresh = generate(out)
        target = ROOT / PACKAGE_DIR
        stale = [p for p in fresh if not (ROOT / p).exists() or (ROOT / p).read_bytes() != (out / p).read_bytes()]
        extra = [
            p.relative_to(ROOT)
            for p in target.iterdir()
            if p.name.endswith(GENERATED_SUFFIXES) and p.relative_to(ROOT) not in fresh
        ]
        if options.check:
            for path in stale + extra:
                print(f"stale generated file: {path}")
            return 1 if stale or extra else 0
        for path in extra:
            (ROOT / path).unlink()
        for path in fresh:
            shutil.copyfile(out / path, ROOT / path)
        print(f"generated {len(fresh)} files in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
