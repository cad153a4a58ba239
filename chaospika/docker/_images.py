"""Small images built on this machine with `docker import`: no registry needed.

An image is a root filesystem holding some host binaries (at /usr/local/bin/NAME)
and the shared libraries `ldd` lists for them (at the paths `ldd` shows, so the
dynamic loader finds them), plus a few empty folders. Its tag is a hash of that
content, so an image is built once per binary version and reused after.
"""

import hashlib
import io
import os
import re
import subprocess
import tarfile
from typing import Any

from chaoslib.exceptions import ActivityFailed

__all__ = [
    "BUILT_BY_LABEL",
    "build_image",
    "image_files",
    "image_reference",
    "shared_libraries",
]

BUILT_BY_LABEL = "io.chaospika.built-by"
RECIPE_VERSION = "1"
LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


def shared_libraries(binary: str) -> list[str]:
    """The shared libraries (and loader) `binary` loads, as `ldd` lists them."""
    try:
        done = subprocess.run(
            ["ldd", binary], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ActivityFailed(f"cannot run ldd on {binary}: {error}") from None
    text = done.stdout + done.stderr
    if "not a dynamic executable" in text or "statically linked" in text:
        return []
    if done.returncode != 0:
        raise ActivityFailed(f"ldd {binary} failed: {text.strip()[:500]}")
    missing = [line.strip() for line in text.splitlines() if "not found" in line]
    if missing:
        raise ActivityFailed(f"{binary} needs libraries not found: {missing}")
    return [m.group(1) for m in map(LDD_LINE.search, text.splitlines()) if m]


def image_files(binaries: dict[str, str]) -> dict[str, str]:
    """{path in the image: host file} for `binaries` ({name: host path}) and
    their libraries."""
    files: dict[str, str] = {}
    for name, host_path in sorted(binaries.items()):
        if not os.path.isfile(host_path) or not os.access(host_path, os.X_OK):
            raise ActivityFailed(f"{host_path!r} is not an executable file")
        files[f"/usr/local/bin/{name}"] = host_path
        for library in shared_libraries(host_path):
            files.setdefault(library, library)
    return files


def _digest(files: dict[str, str], changes: list[str], folders: tuple) -> str:
    digest = hashlib.sha256(f"recipe {RECIPE_VERSION}\n".encode())
    for inside, host in sorted(files.items()):
        digest.update(f"{inside}\n".encode())
        with open(host, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    digest.update(repr((changes, folders)).encode())
    return digest.hexdigest()[:16]


def _tar(files: dict[str, str], folders: tuple) -> bytes:
    """The root filesystem as an uncompressed tar (files dereferenced)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", dereference=True) as tar:
        made = set()

        def folder(path: str, mode: int = 0o755) -> None:
            parts = path.strip("/").split("/")
            for depth in range(1, len(parts) + 1):
                name = "/".join(parts[:depth])
                if name and name not in made:
                    made.add(name)
                    info = tarfile.TarInfo(name)
                    info.type, info.mode = tarfile.DIRTYPE, mode
                    tar.addfile(info)

        for path in folders:
            folder(path, 0o1777 if path.strip("/") == "tmp" else 0o755)
        for inside, host in sorted(files.items()):
            folder(os.path.dirname(inside))
            info = tar.gettarinfo(host, arcname=inside.lstrip("/"))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(host, "rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


def image_reference(
    repository: str,
    binaries: dict[str, str],
    folders: tuple = ("tmp", "data"),
    changes: list[str] | None = None,
) -> str:
    """The reference ``repository:hash`` that `build_image` gives these arguments."""
    return _reference(repository, image_files(binaries), folders, changes)[0]


def _reference(
    repository: str, files: dict[str, str], folders: tuple, changes: list[str] | None
) -> tuple[str, str, list[str]]:
    changes = [*(changes or []), f"LABEL {BUILT_BY_LABEL}=chaospika"]
    tag = _digest(files, changes, folders)
    return f"{repository}:{tag}", tag, changes


def build_image(
    client: Any,
    repository: str,
    binaries: dict[str, str],
    folders: tuple = ("tmp", "data"),
    changes: list[str] | None = None,
) -> str:
    """Import (unless present) the image of `binaries`; return its tag.

    `client` is a ``docker.APIClient``; `changes` are Dockerfile instructions
    applied at import (CMD, ENV, ...). The image carries the label
    ``io.chaospika.built-by=chaospika``.
    """
    import docker

    files = image_files(binaries)
    reference, tag, changes = _reference(repository, files, folders, changes)
    try:
        client.inspect_image(reference)
        return reference
    except docker.errors.ImageNotFound:
        pass
    client.import_image_from_data(
        _tar(files, folders), repository=repository, tag=tag, changes=changes
    )
    client.inspect_image(reference)  # raises if the import did not make it
    return reference
