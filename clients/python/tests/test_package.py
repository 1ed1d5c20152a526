"""The package as it ships: a wheel built from pyproject.toml (in a copy of
the tree, so no build output lands here) carries the Lua script and the
type marker, and imports from the wheel alone."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile

from conftest import PACKAGE, REPO


def test_the_wheel_ships_the_script_and_imports_on_its_own(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src, ignore=shutil.ignore_patterns("tests", "examples", "__pycache__", ".pytest_cache"))
    build = "import setuptools.build_meta as b, sys; print(b.build_wheel(sys.argv[1]))"
    out = subprocess.run([sys.executable, "-s", "-c", build, str(tmp_path / "dist")], cwd=src, check=True,
                         capture_output=True, text=True)
    wheel = tmp_path / "dist" / out.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert {"wsgate/__init__.py", "wsgate/publisher.py", "wsgate/frames.py", "wsgate/identity.py",
                "wsgate/fastapi.py", "wsgate/publish.lua", "wsgate/py.typed"} <= names
        assert z.read("wsgate/publish.lua") == (REPO / "bridge" / "publish.lua").read_bytes()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        # "redis (>=4)" from setuptools 66 (Debian 12), "redis>=4" from newer ones.
        assert re.search(r"^Requires-Dist: redis ?\(?>=4\)?$", metadata, re.M), metadata
        z.extractall(tmp_path / "site")
    probe = "import wsgate, sys; print(wsgate.__file__); print(len(wsgate.PUBLISH_SCRIPT))"
    out = subprocess.run([sys.executable, "-s", "-c", probe], cwd=tmp_path, check=True, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path / "site")})
    path, size = out.stdout.split()
    assert path == str(tmp_path / "site" / "wsgate" / "__init__.py")
    assert int(size) == len((REPO / "bridge" / "publish.lua").read_text())
