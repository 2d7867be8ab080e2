"""The suites' virtualenv and their tests, fetched from PyPI with pip and cached.

Why a virtualenv of its own: the suites must run against the client versions their
tests were written for (a test folder from one release against another release's
library reports the difference between releases, not Sluice's), and installing those
pins into the project's virtualenv would change what its own tests run with.
Everything lives in the work folder (ignored by git): `venv/`, `archives/` (the source
archives as pip downloaded them) and `src/<project>-<version>/` (the unpacked members).
A stamp file next to each says what it was made from, so a changed pin remakes it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from conformance.suites import Suite

_PIP_TIMEOUT = 600.0


def _stamp_matches(stamp: Path, content: str) -> bool:
    return stamp.exists() and stamp.read_text(encoding="utf-8") == content


def _run(args: list[str]) -> None:
    """Run a setup command; its output is shown only when it fails."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=_PIP_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} ... failed:\n{proc.stdout}{proc.stderr}")


def ensure_venv(work: Path, suites: tuple[Suite, ...]) -> Path:
    """The suites' virtualenv with every suite's pinned requirements; its python."""
    venv = work / "venv"
    python = venv / "bin" / "python"
    wanted = "\n".join(sorted({req for suite in suites for req in suite.requirements})) + "\n"
    stamp = venv / ".conformance-requirements"
    if python.exists() and _stamp_matches(stamp, wanted):
        return python
    if venv.exists():
        shutil.rmtree(venv)  # made from other pins: start again rather than mix versions
    print(f"conformance: creating {venv} with {wanted.split()}", flush=True)
    _run([sys.executable, "-m", "venv", str(venv)])
    _run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *wanted.split()]
    )
    stamp.write_text(wanted, encoding="utf-8")
    return python


def _archive(archives: Path, sdist: str) -> Path | None:
    project, _, version = sdist.partition("==")
    for stem in {project, project.replace("-", "_")}:
        path = archives / f"{stem}-{version}.tar.gz"
        if path.exists():
            return path
    return None


def download(python: Path, archives: Path, sdist: str) -> Path:
    """The source archive of `sdist` ("project==version"), downloaded by pip if missing."""
    found = _archive(archives, sdist)
    if found is not None:
        return found
    archives.mkdir(parents=True, exist_ok=True)
    print(f"conformance: downloading the source archive of {sdist}", flush=True)
    pip = [str(python), "-m", "pip", "download", "-q", "--disable-pip-version-check"]
    _run([*pip, "--no-deps", "--no-binary", ":all:", "-d", str(archives), sdist])
    found = _archive(archives, sdist)
    if found is None:
        raise RuntimeError(f"pip downloaded no source archive for {sdist} into {archives}")
    return found


def _wanted(name: str, members: tuple[str, ...]) -> bool:
    return any(name == m.rstrip("/") or name.startswith(m) for m in members)


def unpack(archive: Path, dest: Path, members: tuple[str, ...]) -> None:
    """Extract the `members` of `archive` below `dest`, without the archive's top folder."""
    with tarfile.open(archive) as tar:
        chosen = []
        for info in tar.getmembers():
            _, _, rest = info.name.partition("/")
            if rest and _wanted(rest, members):
                info.name = rest
                chosen.append(info)
        tar.extractall(dest, members=chosen, filter="data")


def ensure_tests(suite: Suite, work: Path, python: Path) -> Path:
    """The folder holding `suite`'s unpacked tests (the driver's working directory)."""
    dest = work / "src" / suite.folder
    stamp = dest / ".conformance-members"
    wanted = "\n".join(suite.members) + "\n"
    if _stamp_matches(stamp, wanted):
        return dest
    archive = download(python, work / "archives", suite.sdist)
    if dest.exists():
        shutil.rmtree(dest)
    unpack(archive, dest, suite.members)
    stamp.write_text(wanted, encoding="utf-8")
    return dest
