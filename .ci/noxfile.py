"""The tests on three sets of packages: the oldest that requirements.txt allows, Colab's, and the newest tested.

    nox -f .ci/noxfile.py             # all three; -s oldest, -s colab or -s newest for one

uv makes each session's environment from the Python package index. python3.10 and python3.13 must be
on the path (with pyenv, list them in PYENV_VERSION, as .ci/run does).
"""
import json
import re
from pathlib import Path

import nox

CI = Path(__file__).resolve().parent
REPO = CI.parent
REQUIREMENTS = str(REPO / "requirements.txt")
FLOORS = dict(re.findall(r"^([\w-]+)>=([\w.]+)", Path(REQUIREMENTS).read_text(encoding="utf-8"), re.M))
nox.options.default_venv_backend = "uv"
nox.options.error_on_missing_interpreters = True  # a Python that is missing fails the run, not skips it


@nox.session(python="3.10")
def oldest(session):
    """Python 3.10 with the lowest versions that requirements.txt allows (and their dependencies' newest)."""
    session.install("--resolution=lowest-direct", "-r", REQUIREMENTS, "-c", str(CI / "oldest.txt"))
    session.run("python", "-c", "import importlib.metadata as m, sys; floors = %r; installed = {name: m.version(name) "
                "for name in floors}; sys.exit(0 if installed == floors else f'not the floors: {installed}')" % FLOORS)
    session.chdir(REPO)
    session.run("python", "-m", "pytest", "tests")


@nox.session(python="3.13")
def colab(session):
    """Colab's packages as they are: `pip install -r requirements.txt` installs nothing; the tests pass, and the
    notebook runs in Colab's kernel."""
    session.install("-r", str(CI / "colab.txt"), "pip")
    tmp = Path(session.create_tmp()).resolve()
    session.run("python", "-m", "pip", "install", "--quiet", "--dry-run", "--report", str(tmp / "report.json"),
                "-r", REQUIREMENTS)
    would_install = [item["metadata"]["name"] for item in json.loads((tmp / "report.json").read_text())["install"]]
    if would_install:
        session.error(f"pip install -r requirements.txt would install {would_install} on Colab")
    session.chdir(REPO)
    session.run("python", "-m", "pytest", "tests")
    session.run("python", "-m", "pytest", "tests", "-m", "ci", "-k", "notebook")


@nox.session(python="3.13")
def newest(session):
    """The newest Python on these machines with the newest releases tested (.ci/newest.txt)."""
    session.install("-r", REQUIREMENTS, "-r", str(CI / "notebook.txt"), "-c", str(CI / "newest.txt"))
    session.chdir(REPO)
    session.run("python", "-m", "pytest", "tests")
    session.run("python", "-m", "pytest", "tests", "-m", "ci", "-k", "notebook")
