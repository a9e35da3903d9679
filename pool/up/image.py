"""The demo's context image: a plain busybox image (no agent inside), built locally from
Debian's ``busybox-static`` with ``docker import`` when the engine lacks it (no registry is
needed). Its default command sleeps: the node injects ``drpcli`` as DRP's plugin does.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import docker

from pool.contexts.dockerapi import EngineNotFoundError, engine_call
from pool.errors import ConfigError

DEMO_IMAGE = "ctxpool-demo/busybox:1"
#: Applets linked in the image (busybox runs the others as ``busybox <applet>``).
APPLETS = (
    "sh", "sleep", "env", "cat", "ls", "echo", "true", "false", "ps", "id", "wget", "date",
    "hostname", "mkdir", "rm", "grep", "sed", "awk", "tr", "head", "tail", "printf", "test",
)  # fmt: skip


def busybox_binary() -> Path:
    """A static busybox on this host.

    Raises:
        ConfigError: none is installed.
    """
    for candidate in (shutil.which("busybox"), "/bin/busybox"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise ConfigError("busybox is not installed (apt-get install busybox-static)")


def rootfs_tar(busybox: Path) -> bytes:
    """A minimal root file system: busybox, its applet links, ``/tmp`` and ``/etc``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("bin", "tmp", "etc", "usr", "usr/bin"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(passwd))
    return buf.getvalue()


def ensure_demo_image(client: docker.DockerClient, tag: str = DEMO_IMAGE) -> str:
    """``tag`` on the engine, imported from the host's busybox when absent.

    Raises:
        ConfigError: busybox is missing on the host.
        EngineError: the engine failed.
    """
    try:
        with engine_call(f"inspect image {tag}"):
            client.images.get(tag)
        return tag
    except EngineNotFoundError:
        pass
    data = rootfs_tar(busybox_binary())
    repo, _, version = tag.rpartition(":")
    with engine_call(f"import image {tag}"):
        client.api.import_image_from_data(
            data, repository=repo, tag=version, changes=['CMD ["/bin/sleep", "2147483647"]']
        )
    return tag
