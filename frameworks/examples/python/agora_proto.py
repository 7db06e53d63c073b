"""Python modules for Agora's protocol, generated from agora.proto when needed.

`load()` runs `grpc_tools.protoc` on proto/proto/agora/v1/agora.proto and imports the result:
`agora_pb2` (messages) and `agora_pb2_grpc` (service stubs). The generated code goes to
`_generated/<hash of the .proto>/` next to this file (git ignores it), so a changed .proto is
regenerated, never stale, and nothing generated is committed. When that directory is not
writable, a temporary directory is used instead.
"""

import hashlib
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_PROTO_ROOT = HERE.parent.parent.parent / "proto" / "proto"
PROTO_FILE = "agora/v1/agora.proto"


class ProtoError(Exception):
    """The protocol modules could not be generated or imported."""


def _generate(proto_root: Path, out_dir: Path) -> None:
    """Generates into a fresh sibling directory, then renames it to `out_dir`: a concurrent
    run sees either nothing or the complete modules."""
    from grpc_tools import protoc  # imported late: only needed when generating

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out_dir.parent))
    try:
        well_known = Path(protoc.__file__).resolve().parent / "_proto"
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{proto_root}",
                f"-I{well_known}",
                f"--python_out={scratch}",
                f"--grpc_python_out={scratch}",
                PROTO_FILE,
            ]
        )
        if status != 0:
            raise ProtoError(f"grpc_tools.protoc failed on {proto_root / PROTO_FILE} (exit {status})")
        try:
            scratch.rename(out_dir)
        except OSError:
            if not out_dir.exists():
                raise
            # Another run finished first with the same source: use its modules.
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _writable(directory: Path) -> bool:
    existing = directory if directory.exists() else directory.parent
    return os.access(existing, os.W_OK)


def load(proto_root=None):
    """Returns (agora_pb2, agora_pb2_grpc), generating them first if they are missing or stale.

    proto_root: the directory holding agora/v1/agora.proto (default: the repository's
    proto/proto, or $AGORA_PROTO_DIR).
    """
    root = Path(proto_root or os.environ.get("AGORA_PROTO_DIR") or DEFAULT_PROTO_ROOT)
    source = root / PROTO_FILE
    try:
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
    except OSError as error:
        raise ProtoError(f"cannot read {source}: {error} (set --proto or AGORA_PROTO_DIR)") from error

    # One directory per version of the .proto file, so a changed file is regenerated.
    base = HERE / "_generated"
    if not _writable(base):
        base = Path(tempfile.gettempdir()) / "agora-proto"
    out_dir = base / digest[:16]
    if not out_dir.exists():
        _generate(root, out_dir)

    if str(out_dir) not in sys.path:
        sys.path.insert(0, str(out_dir))
    try:
        messages = importlib.import_module("agora.v1.agora_pb2")
        services = importlib.import_module("agora.v1.agora_pb2_grpc")
    except ImportError as error:
        raise ProtoError(f"importing the generated modules from {out_dir}: {error}") from error
    return messages, services
