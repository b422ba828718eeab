"""Podman for the container tests: a base image made here, the project's
image built on it, and containers run inside the lab's namespaces.

No image registry is reachable from the test machines, so the base image
(Debian 12 with Python 3.11, standing in for python:3.11-slim) is made
with debootstrap from the mirror apt itself uses, with the host's extra
CA certificates added so that pip inside the build trusts the
TLS-inspecting proxy in front of PyPI. It is cached under a tag that
carries a digest of its inputs (suite, packages, mirror, certificates):
the first run takes about a minute more, the next ones reuse it. The
project's image is tagged with a digest of the base's tag and of the
files the Dockerfile copies: it is built (in about half a minute) only
when those changed, and the versions it replaces are removed.

Containers join a lab namespace with ``nsenter --net`` and ``--network
host``. ``ip netns exec`` cannot be used: it mounts a fresh /sys for the
namespace, which hides the cgroup hierarchies runc needs.

Limits: needs root, podman with runc, debootstrap, and the network to
reach the Debian mirror and PyPI on a cold machine. One lock file
serialises image building between test processes on one machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = Path(__file__).with_name("containers.conf")
SUITE = "bookworm"
BASE_PACKAGES = "ca-certificates,python3,python3-venv"
BASE_REPO = "localhost/sgw-reach-test-base"
IMAGE_REPO = "localhost/sgw-reach-test"
# What the Dockerfile copies into the image.
CONTEXT_FILES = ("Dockerfile", "pyproject.toml", "README.md")
CONTEXT_FOLDERS = ("agent", "probes", "rules")
IMAGE_UID = 10001
EXTRA_CAS = Path("/usr/local/share/ca-certificates")
APT_SOURCES = Path("/etc/apt")
LOCK_FILE = Path("/var/tmp/sgw-reach-container-images.lock")
PROGRAMS = ("podman", "runc", "debootstrap", "nsenter", "tar", "chroot")
# What the base image leaves out, as slim images do: package lists and
# downloads, documentation, manual pages and translations.
TRIMMED = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)
_DEBOOTSTRAP_TIMEOUT = 900.0
_BUILD_TIMEOUT = 900.0
_COMMAND_TIMEOUT = 120.0
_LOCK_WAIT = 1800.0
_LOCK_POLL = 0.5


class ContainersUnsupported(Exception):
    """This machine cannot build or run the images (not root, no podman)."""


class ImageError(Exception):
    """A step of making an image failed; the message holds its output."""


def environment() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def preflight() -> None:
    """Raise ContainersUnsupported when the tests cannot run here."""
    if os.geteuid() != 0:
        raise ContainersUnsupported("needs root")
    missing = [name for name in PROGRAMS if shutil.which(name) is None]
    if missing:
        raise ContainersUnsupported(f"missing programs: {', '.join(missing)}")


def run(
    argv: Sequence[str], timeout: float = _COMMAND_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run a command with the tests' podman settings, standard input empty;
    an exit code is the caller's to judge."""
    return subprocess.run(
        list(argv),
        input="",
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment(),
        cwd=REPO_ROOT,
        check=False,
    )


def podman(*args: str, timeout: float = _COMMAND_TIMEOUT) -> str:
    """Run podman; its standard output, or ImageError."""
    done = run(["podman", *args], timeout)
    if done.returncode != 0:
        raise ImageError(
            f"podman {' '.join(args)} exited {done.returncode}: "
            f"{done.stderr.strip()[-2000:]}"
        )
    return done.stdout


def in_namespace(ns: str, argv: Sequence[str]) -> list[str]:
    """argv that runs `argv` in the network namespace `ns` only."""
    return ["nsenter", f"--net=/run/netns/{ns}", *argv]


def mirror(apt_dir: Path = APT_SOURCES) -> str:
    """The Debian mirror apt uses for SUITE, from its own sources files."""
    files = [apt_dir / "sources.list"]
    files += sorted((apt_dir / "sources.list.d").glob("*.list"))
    files += sorted((apt_dir / "sources.list.d").glob("*.sources"))
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        found = (
            _deb822_mirror(text) if path.suffix == ".sources" else _list_mirror(text)
        )
        if found is not None:
            return found
    raise ImageError(f"no {SUITE} mirror in apt's sources under {apt_dir}")


def _list_mirror(text: str) -> str | None:
    """One-line format: ``deb [options] URI SUITE COMPONENTS``."""
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", " ", line.split("#")[0]).split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
            return words[1]
    return None


def _deb822_mirror(text: str) -> str | None:
    """deb822 format: stanzas of ``Field: value`` lines."""
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith(("#", " ", "\t")):
                fields[key.strip().lower()] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        types = fields.get("types", "").split()
        suites = fields.get("suites", "").split()
        uris = fields.get("uris", "").split()
        if "deb" in types and SUITE in suites and uris:
            return uris[0]
    return None


def extra_cas() -> list[Path]:
    if not EXTRA_CAS.is_dir():
        return []
    return sorted(path for path in EXTRA_CAS.rglob("*.crt") if path.is_file())


def base_tag(source: str, cas: Sequence[Path]) -> str:
    """The cached base image's tag: a digest of everything that makes it."""
    digest = hashlib.sha256()
    for part in (SUITE, BASE_PACKAGES, source, *TRIMMED):
        digest.update(part.encode() + b"\0")
    for path in cas:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"{BASE_REPO}:{SUITE}-{digest.hexdigest()[:12]}"


@contextlib.contextmanager
def image_lock() -> Iterator[None]:
    """Hold the machine-wide lock on making the images, waiting a bounded
    time for another test process to finish."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("a") as handle:
        deadline = time.monotonic() + _LOCK_WAIT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ImageError(f"{LOCK_FILE} held too long") from None
                time.sleep(_LOCK_POLL)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def exists(image: str) -> bool:
    return run(["podman", "image", "exists", image]).returncode == 0


def base_image() -> str:
    """The base image's tag, made first when not cached."""
    source = mirror()
    cas = extra_cas()
    tag = base_tag(source, cas)
    if exists(tag):
        return tag
    with tempfile.TemporaryDirectory(prefix="sgw-reach-rootfs-") as work:
        rootfs = Path(work) / "rootfs"
        _debootstrap(rootfs, source)
        _trim(rootfs)
        _add_cas(rootfs, cas)
        tar = subprocess.run(
            ["tar", "-C", str(rootfs), "-c", "."],
            capture_output=True,
            timeout=_COMMAND_TIMEOUT,
            check=True,
        )
        done = subprocess.run(
            ["podman", "import", "-", tag],
            input=tar.stdout,
            capture_output=True,
            timeout=_COMMAND_TIMEOUT,
            env=environment(),
            check=False,
        )
        if done.returncode != 0:
            raise ImageError(f"podman import: {done.stderr.decode()[-2000:]}")
    return tag


def _debootstrap(rootfs: Path, source: str) -> None:
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={BASE_PACKAGES}",
        SUITE,
        str(rootfs),
        source,
    ]
    done = run(argv, _DEBOOTSTRAP_TIMEOUT)
    if done.returncode != 0:
        log = rootfs / "debootstrap" / "debootstrap.log"
        detail = log.read_text()[-2000:] if log.is_file() else done.stderr[-2000:]
        raise ImageError(f"debootstrap exited {done.returncode}: {detail}")


def _trim(rootfs: Path) -> None:
    for part in TRIMMED:
        folder = rootfs / part
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _add_cas(rootfs: Path, cas: Sequence[Path]) -> None:
    if not cas:
        return
    target = rootfs / "usr/local/share/ca-certificates"
    target.mkdir(parents=True, exist_ok=True)
    for path in cas:
        shutil.copyfile(path, target / path.name)
    done = run(["chroot", str(rootfs), "update-ca-certificates"])
    if done.returncode != 0:
        raise ImageError(f"update-ca-certificates: {done.stderr.strip()}")


def context_digest(base: str, root: Path = REPO_ROOT) -> str:
    """A digest of the base image's tag and of every file the Dockerfile
    copies, compiled bytecode left out."""
    digest = hashlib.sha256(base.encode() + b"\0")
    files = [root / name for name in CONTEXT_FILES]
    for folder in CONTEXT_FOLDERS:
        files += sorted((root / folder).rglob("*"))
    for path in files:
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        name = path.relative_to(root).as_posix()
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def build_image(base: str) -> str:
    """The project's image on `base`, built when its sources changed."""
    tag = f"{IMAGE_REPO}:{context_digest(base)}"
    if exists(tag):
        return tag
    podman(
        "build",
        # Without the layer cache: the tag above is the cache, and no
        # intermediate image is left behind by each change of the sources.
        "--layers=false",
        # The docker format keeps the HEALTHCHECK, which OCI images lack.
        "--format",
        "docker",
        # pip reaches PyPI through the host's own network.
        "--network",
        "host",
        "--build-arg",
        f"BASE={base}",
        "--tag",
        tag,
        "--file",
        str(REPO_ROOT / "Dockerfile"),
        str(REPO_ROOT),
        timeout=_BUILD_TIMEOUT,
    )
    return tag


def remove_other_tags(repository: str, keep: str) -> None:
    """Remove the images of `repository` other than `keep`; one still used
    by a container stays."""
    listed = run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"])
    for name in listed.stdout.split():
        if name.rpartition(":")[0] == repository and name != keep:
            run(["podman", "rmi", name])


def prepare() -> str:
    """The project's image on the base image, each made when missing;
    older versions of both are removed."""
    preflight()
    with image_lock():
        base = base_image()
        image = build_image(base)
        remove_other_tags(IMAGE_REPO, image)
        remove_other_tags(BASE_REPO, base)
    return image
