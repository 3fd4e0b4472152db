"""Fixtures: the real Fashion-MNIST data, a trained model, and a tiny stand-in for Debian's copy of the data."""
import gzip
import hashlib
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's softmax_fashion, wherever pytest starts
import softmax_fashion as sf  # noqa: E402


def pytest_configure(config):
    torch.set_num_threads(1)  # as main() trains
    # Warnings are errors where the tutorial or its tests cause them (a deprecated call, say), not in libraries.
    config.addinivalue_line("filterwarnings", "error:::(softmax_fashion|conftest|test_)")
    config.addinivalue_line("markers", "ci: the slow checks that CI runs: every number stated, and the notebook")
    if not config.option.markexpr:  # `pytest tests` runs the fast ones; `pytest tests -m ci` the slow ones
        config.option.markexpr = "not ci"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")  # the tutorial leaves its figures open, for a notebook to show


@pytest.fixture(scope="session")
def data_dir():
    """The repository's data/ folder, with the four original files (from Debian's copy if need be)."""
    sf.prepare_data(REPO / "data")
    return REPO / "data"


@pytest.fixture(scope="session")
def tutorial_data(data_dir):
    """((3,500 images, labels), (500 images, labels))."""
    return sf.train_val_split(*sf.load_fashion_mnist(data_dir, count=4000))


@pytest.fixture(scope="session")
def test_data(data_dir):
    return sf.load_fashion_mnist(data_dir, train=False)


def history():
    return {"train_loss": [], "val_loss": [], "val_accuracy": []}


def train(data, epochs, lr=0.01, fit=sf.fit, log_every=10):
    """A model seeded with 0 and fitted as the tutorial does: (model, history)."""
    torch.manual_seed(0)
    model = sf.SoftmaxClassifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    return model, fit(model, sf.make_batches(*data[0]), data[1], torch.nn.CrossEntropyLoss(), optimizer, epochs,
                      history(), log_every)


@pytest.fixture(scope="session")
def trained_model(tutorial_data):
    """A model trained for 3 epochs with the original's settings (72.8% validation accuracy)."""
    return train(tutorial_data, 3)[0].eval()


def one_error_line(err):
    """The line that says what went wrong: fails on a traceback, or on more than argparse's usage line."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and (len(lines) == 1 or len(lines) == 2 and lines[0].startswith("usage:")), err
    return lines[-1]


@pytest.fixture
def tiny_data(tmp_path, monkeypatch):
    """A tiny Fashion-MNIST (30 training and 7 test images) in place of Debian's copy, with its checksums:
    (the copy's folder, the data folder to give --data-dir)."""
    folder = tmp_path / "debian"
    folder.mkdir()
    generator, checksums = torch.Generator().manual_seed(1), {}
    for split, n in (("train", 30), ("t10k", 7)):
        images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator)
        for kind, array in (("images-idx3", images), ("labels-idx1", torch.arange(n, dtype=torch.uint8) % 10)):
            # An IDX file: two zero bytes, 0x08 for unsigned bytes, the number of dimensions, their sizes, the data.
            raw = bytes([0, 0, 8, array.dim()]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
            raw += array.numpy().tobytes()
            (folder / f"{split}-{kind}-ubyte.gz").write_bytes(gzip.compress(raw))
            checksums[f"{split}-{kind}-ubyte"] = hashlib.md5(raw).hexdigest()
    monkeypatch.setattr(sf, "DEBIAN_DIR", folder)
    monkeypatch.setattr(sf, "RAW_FILES", checksums)
    return folder, tmp_path / "data"
