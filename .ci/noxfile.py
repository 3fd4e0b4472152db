"""The tests on the oldest and on the newest supported combination of Python and packages.

    nox -f .ci/noxfile.py             # both sessions; -s oldest or -s newest for one

uv makes each session's environment from the Python package index. python3.10 and python3.13
must be on the path (with pyenv, list them in PYENV_VERSION, as .ci/run does).
"""
from pathlib import Path

import nox

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = str(REPO / "requirements.txt")
nox.options.default_venv_backend = "uv"
nox.options.error_on_missing_interpreters = True  # a Python that is missing fails the run, not skips it


@nox.session(python="3.10")
def oldest(session):
    """Python 3.10 with the lowest versions that requirements.txt allows (and their dependencies' newest)."""
    session.install("--resolution=lowest-direct", "-r", REQUIREMENTS)
    session.chdir(REPO)
    session.run("python", "-m", "pytest", "tests", env={"OLDEST_COMBINATION": "1"})


@nox.session(python="3.13")
def newest(session):
    """The newest Python on these machines with the newest releases that requirements.txt allows."""
    session.install("--resolution=highest", "-r", REQUIREMENTS)
    session.chdir(REPO)
    session.run("python", "-m", "pytest", "tests")
