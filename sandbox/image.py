"""Build the sandbox image: `docker build` from sandbox/Dockerfile where a registry answers, else `docker import`
of a minimal root filesystem made from the host's own Python (as on machines without a registry).

    python3 sandbox/image.py [--method auto|dockerfile|import] [--force]   # stdlib only: .ci/run runs it before any venv
    python -m harness.sandbox.image [...]                                  # the same, from an installed harness
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

IMAGE = "harness-sandbox:1"
SANDBOX_UID = 65534
HERE = Path(__file__).resolve().parent
# What programs under test may reasonably call besides python3 (subprocess, shell=True).
EXTRA_BINARIES = ["sh", "dash", "sleep", "cat", "ls", "env", "true", "false", "echo", "rm", "mkdir", "kill"]
SKIP_STDLIB = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3/tests", "site-packages",
               "dist-packages", "config-3.11-x86_64-linux-gnu"}


def image_exists(image: str = IMAGE) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def _ldd(paths: list[str]) -> set[str]:
    libs: set[str] = set()
    for path in paths:
        out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
                libs.add(parts[2])
            elif parts and parts[0].startswith("/"):
                libs.add(parts[0])
    return libs


class _Rootfs:
    def __init__(self, tar: tarfile.TarFile):
        self.tar = tar
        self.seen: set[str] = set()

    def _dirs(self, path: str) -> None:
        parent = os.path.dirname(path)
        if parent in ("", "/") or parent in self.seen:
            return
        self._dirs(parent)
        self.seen.add(parent)
        info = tarfile.TarInfo(parent.lstrip("/"))
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        self.tar.addfile(info)

    def dir(self, path: str, mode: int = 0o755) -> None:
        if path in self.seen:
            return
        self._dirs(path)
        self.seen.add(path)
        info = tarfile.TarInfo(path.lstrip("/"))
        info.type, info.mode = tarfile.DIRTYPE, mode
        self.tar.addfile(info)

    def symlink(self, path: str, target: str) -> None:
        if path in self.seen:
            return
        self._dirs(path)
        self.seen.add(path)
        info = tarfile.TarInfo(path.lstrip("/"))
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
        self.tar.addfile(info)

    def file(self, host_path: str) -> None:
        """Add a host file under its real path, plus a symlink where it was found through a link."""
        real = os.path.realpath(host_path)
        if real not in self.seen:
            self._dirs(real)
            self.seen.add(real)
            self.tar.add(real, arcname=real.lstrip("/"), recursive=False)
        alias = os.path.join(os.path.realpath(os.path.dirname(host_path)), os.path.basename(host_path))
        if alias != real:
            self.symlink(alias, real)

    def data(self, path: str, content: bytes, mode: int = 0o644) -> None:
        self._dirs(path)
        self.seen.add(path)
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size, info.mode = len(content), mode
        self.tar.addfile(info, io.BytesIO(content))


def write_rootfs(out: io.BufferedIOBase, python: str = "/usr/bin/python3") -> None:
    """A root filesystem with the host's system Python, its stdlib, the shared libraries they need,
    a shell and a few coreutils, and an unprivileged user. Debian/Ubuntu layout."""
    python_real = os.path.realpath(python)
    stdlib = sysconfig.get_paths()["stdlib"] if python_real == os.path.realpath(sys.executable) else None
    if stdlib is None:
        stdlib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"],
                                capture_output=True, text=True, check=True).stdout.strip()
    binaries = [python_real] + [p for p in (f"/usr/bin/{b}" for b in EXTRA_BINARIES) if os.path.exists(p)]
    with tarfile.open(fileobj=out, mode="w|") as tar:
        fs = _Rootfs(tar)
        for top in ("bin", "lib", "lib64", "sbin", "lib32"):
            if os.path.islink(f"/{top}"):
                fs.symlink(f"/{top}", os.readlink(f"/{top}"))
        for d in ("/proc", "/dev", "/sys", "/etc", "/usr/local/bin", "/home"):
            fs.dir(d)
        fs.dir("/tmp", 0o1777)
        sos: list[str] = []
        for root, dirs, names in os.walk(stdlib):
            rel = os.path.relpath(root, stdlib)
            dirs[:] = [d for d in dirs if os.path.normpath(os.path.join(rel, d)) not in SKIP_STDLIB]
            for name in names:
                path = os.path.join(root, name)
                if os.path.isfile(path):
                    fs.file(path)
                    if name.endswith(".so"):
                        sos.append(path)
        for b in binaries:
            fs.file(b)
        for lib in sorted(_ldd(binaries + sos)):
            fs.file(lib)
        fs.symlink("/usr/bin/python3", os.path.basename(python_real))
        fs.symlink("/usr/bin/python", os.path.basename(python_real))
        if os.path.exists("/etc/ld.so.cache"):
            fs.file("/etc/ld.so.cache")
        fs.data("/etc/passwd", f"root:x:0:0:root:/root:/bin/sh\nsandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:/tmp:/bin/sh\n".encode())
        fs.data("/etc/group", f"root:x:0:\nsandbox:x:{SANDBOX_UID}:\n".encode())
        for f in ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf"):
            fs.data(f, b"")  # docker bind-mounts these; the files must exist on a read-only root


def build_with_import(image: str = IMAGE) -> None:
    changes = [f"USER {SANDBOX_UID}:{SANDBOX_UID}", "WORKDIR /tmp", "ENV PATH=/usr/local/bin:/usr/bin:/bin",
               "ENV LANG=C.UTF-8", 'CMD ["python3"]']
    argv = ["docker", "import"] + [a for c in changes for a in ("--change", c)] + ["-", image]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        write_rootfs(proc.stdin)
    finally:
        proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError("docker import failed")


def build_with_dockerfile(image: str = IMAGE, timeout: float = 600) -> bool:
    result = subprocess.run(["docker", "build", "-t", image, "-f", str(HERE / "Dockerfile"), str(HERE)],
                            capture_output=True, text=True, timeout=timeout)
    return result.returncode == 0


def ensure_image(image: str = IMAGE, method: str = "auto", force: bool = False) -> str:
    """Make sure `image` exists; returns how it was obtained."""
    if not force and image_exists(image):
        return "present"
    if method in ("auto", "dockerfile"):
        try:
            if build_with_dockerfile(image, timeout=300 if method == "auto" else 1800):
                return "dockerfile"
        except subprocess.TimeoutExpired:
            pass
        if method == "dockerfile":
            raise RuntimeError("docker build of sandbox/Dockerfile failed (is a registry reachable?)")
    build_with_import(image)
    return "import"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=["auto", "dockerfile", "import"], default="auto")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--image", default=IMAGE)
    args = parser.parse_args(argv)
    how = ensure_image(args.image, args.method, args.force)
    print(f"{args.image}: {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
