"""Regenerate the Python code for every .proto under proto/, or check that it is current.

Generated modules live beside their .proto files under proto/ and are never edited by hand.
proto/ installs as ``credgate.api`` (the wheel holds only the ``credgate`` namespace), so the
generated imports are rewritten from ``credit_repair.v1`` to ``credgate.api.credit_repair.v1``,
as temporalio's SDK does for its generated API; descriptor and wire names (``credit_repair.v1``
packages, ``/credit_repair.v1.Service/Method`` paths) are untouched.
The generator versions are pinned in pyproject.toml, so the output is reproducible; CI runs
``python scripts/gen_protos.py --check`` and fails when the committed code is out of date.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

import google.rpc.status_pb2
import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
NAMESPACE = "credgate.api"
"""Where proto/ is installed: the generated packages are ``credgate.api.<proto package>``."""
_MODULE_REFERENCE = re.compile(
    r"^(from |import )(?=(?:credit_repair|cnregistry)\.)"  # an import of a generated module
    r"|(?<=BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')(?=(?:credit_repair|cnregistry)\.)",
    re.M,  # ... and the module name the builder registers the classes under
)


def proto_files() -> list[Path]:
    return sorted(p for p in PROTO_ROOT.rglob("*.proto"))


def include_paths() -> list[Path]:
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    googleapis = Path(google.rpc.status_pb2.__file__).parent.parent.parent
    return [PROTO_ROOT, well_known, googleapis]


def generate(out_dir: Path) -> None:
    args = ["grpc_tools.protoc"]
    args += [f"-I{path}" for path in include_paths()]
    scripts = Path(sys.executable).parent
    args += [
        f"--plugin=protoc-gen-mypy={scripts / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={scripts / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
    ]
    args += [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for module in out_dir.rglob("*"):
        if module.name.endswith(GENERATED_SUFFIXES):
            text = module.read_text()
            module.write_text(_MODULE_REFERENCE.sub(lambda m: (m[1] or "") + NAMESPACE + ".", text))
    # Generated packages would otherwise be implicit namespace packages; mypy and setuptools
    # both want regular ones (proto/ itself is the package credgate.api).
    (out_dir / "__init__.py").touch()
    for module in out_dir.rglob("*_pb2.py"):
        for directory in module.relative_to(out_dir).parents:
            if directory != Path("."):
                (out_dir / directory / "__init__.py").touch()


def generated_files(root: Path) -> set[Path]:
    return {
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and (p.name.endswith(GENERATED_SUFFIXES) or p.name == "__init__.py")
    }


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        generate(fresh_root)
        fresh = generated_files(fresh_root)
        committed = generated_files(PROTO_ROOT)
        stale = sorted(
            str(p)
            for p in fresh | committed
            if p not in fresh
            or p not in committed
            or not filecmp.cmp(fresh_root / p, PROTO_ROOT / p, shallow=False)
        )
    if stale:
        print("generated code is out of date; run: python scripts/gen_protos.py", file=sys.stderr)
        for name in stale:
            print(f"  {name}", file=sys.stderr)
        return 1
    print(f"generated code is current ({len(fresh)} files)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated code is stale")
    if parser.parse_args().check:
        return check()
    for stale in generated_files(PROTO_ROOT):
        (PROTO_ROOT / stale).unlink()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for name in generated_files(Path(tmp)):
            target = PROTO_ROOT / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(tmp) / name, target)
    print(f"regenerated {len(generated_files(PROTO_ROOT))} files under proto/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
