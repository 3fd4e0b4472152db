"""The slow checks that CI runs (`python -m pytest tests -m ci`): every number that README.md states, within what
another CPU may change; its exercises, solved; its Python blocks; the real program; and the notebook."""
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys

import pytest
import torch
from torch import nn
from torchvision.transforms import v2

import softmax_fashion as sf
from conftest import REPO, history

pytestmark = pytest.mark.ci
README = (REPO / "README.md").read_text(encoding="utf-8")
NUMBER = r"-?\d+(?:\.\d+)?"


def close(stated, measured, percent=True):
    """Whether a number as the README prints it is ``measured``: within a validation image (0.2 points) for one
    decimal, two of its last digit for more, 1 for a whole percentage; other whole numbers exactly."""
    decimals = len(stated.partition(".")[2])
    return abs(float(stated) - measured) <= (0.2 if decimals == 1 else 2 * 10**-decimals if decimals else percent)


def check(pattern, *measured, text=README):
    """The numbers that ``pattern``'s groups find in ``text`` are the ``measured`` ones."""
    [found] = re.findall(pattern, " ".join(text.split()))
    found = found if isinstance(found, tuple) else (found,)
    assert all(close(s, m) for s, m in zip(found, measured, strict=True)), (pattern, found, measured)


def program(*argv):
    """The script run as a learner runs it, its own warnings as errors."""
    return subprocess.run([sys.executable, "-W", "error:::__main__", REPO / "softmax_fashion.py", *map(str, argv)],
                          capture_output=True, text=True, cwd=REPO)


@pytest.fixture(scope="module")
def default_run(data_dir, tmp_path_factory):
    """A default run, then --predict on docs/'s four pictures: (what they print, --out-dir, metrics.json)."""
    out_dir = tmp_path_factory.mktemp("default")
    run = program("--out-dir", out_dir)
    pictures = [REPO / "docs" / f"{name}.png" for name in ("tshirt", "trousers", "boot", "boot-mirrored")]
    predict = program("--predict", *pictures, "--out-dir", out_dir)
    assert run.returncode == predict.returncode == 0 and run.stderr == predict.stderr == ""
    return run.stdout + predict.stdout, out_dir, json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))


def test_every_line_of_the_readmes_output_is_printed(default_run):
    for block in re.findall(r"```text\n(.*?)```", README, re.S):
        for line in block.splitlines()[block.startswith("Figures"):]:  # not the path, which is the learner's
            words, numbers = re.sub(NUMBER, "#", line), re.findall(NUMBER, line)
            assert line == "..." or any(all(close(s, float(p), s + "%" in line) for s, p in zip(
                numbers, re.findall(NUMBER, printed))) for printed in default_run[0].splitlines()
                if re.sub(NUMBER, "#", printed) == words), line


def test_the_numbers_in_the_readmes_text(default_run, test_data):
    model, metrics = sf.load_model(default_run[1] / "model.pt"), default_run[2]
    images, labels = test_data
    pictures = images.view(-1, 1, 28, 28)

    def accuracy(changed, of=None):  # on all the test images, or on one class's
        right = sf.evaluate(model, changed.reshape(-1, 784), labels)[0] == labels
        if of:
            right = right[labels == sf.CLASSES.index(of)]
        return 100 * right.float().mean().item()

    def shifted(pixels):
        return v2.functional.affine(pictures, angle=0.0, translate=[pixels, 0], scale=1.0, shear=[0.0])
    mirrored = v2.functional.horizontal_flip(pictures)
    check(r"mirrored left to right: (\S+)%", accuracy(mirrored))
    check(r"boots drop from (\d+)% to (\d+)%", accuracy(pictures, "Ankle boot"), accuracy(mirrored, "Ankle boot"))
    check(r"right: (\S+)% \(trousers drop from (\d+)% to (\d+)%\); 4 pixels: (\S+)%", accuracy(shifted(2)),
          accuracy(pictures, "Trouser"), accuracy(shifted(2), "Trouser"), accuracy(shifted(4)))
    check(r"and centred: (\S+)%", accuracy(v2.functional.center_crop(v2.functional.resize(pictures, [21, 21]), 28)))
    slices = [sf.evaluate(model, images[i:i + 500], labels[i:i + 500])[1] for i in range(0, 10_000, 500)]
    check(r"model gets from (\S+)% to (\S+)%\.", min(slices), max(slices))
    probabilities = model.predict_proba(images[:1])[0]
    check(r"ankle boot gets (\d+)%, against (\d+)% for sneaker", 100 * probabilities[9], 100 * probabilities[7])
    check(r"levels off near (\S+) by epoch 100", metrics["val_loss"][100])
    accuracies = metrics["val_accuracy"]
    check(r"rises from (\d+)% after the first epoch to (\d+)% by epoch 50, then stays near (\d+)%", accuracies[0],
          accuracies[50], statistics.mean(accuracies[50:]))


@pytest.mark.parametrize("row", re.findall(r"^\| `python softmax_fashion.py (.*?)` \| (.*?) \|$", README, re.M))
def test_things_to_try_give_what_the_table_says(row, default_run, tmp_path):
    flags, said = row
    assert program(*flags.split(), "--out-dir", tmp_path).returncode == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    measured = metrics["val_accuracy"][0], metrics["val_accuracy"][-1], metrics["test_accuracy"]
    if "the same numbers" in said:  # --by-hand
        assert all(close(f"{old:.1f}", new) for old, new in zip(default_run[2]["val_accuracy"], metrics["val_accuracy"]))
    else:
        check(r"(\S+)%, (?:.* )?(\S+)% \((\S+)%\)", *measured, text=said)


def exercise(title):
    """The README's exercise whose bold title is ``title``, on one line."""
    [text] = re.findall(rf"^\d+\. \*\*{re.escape(title)}\.\*\*(.*?)(?=^\d+\. \*\*|^#)", README, re.S | re.M)
    return " ".join(text.split())


def train_epoch(model, batches, loss_fn, optimizer):
    """Exercise 1: one epoch's loop, written again."""
    model.train()
    total, count = 0.0, 0
    for images, labels in batches:
        optimizer.zero_grad()
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * len(labels), count + len(labels)
    return total / count


def test_the_exercises_give_their_numbers(tutorial_data, test_data, tmp_path, monkeypatch):
    train_data, val_data = tutorial_data
    batches = sf.make_batches(*train_data)
    torch.manual_seed(0)
    model = sf.SoftmaxClassifier()
    loss = train_epoch(model, batches, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.01))
    check(r"returns (\S+), and .* accuracy of (\S+)% and a loss of (\S+)\.", loss, *sf.evaluate(model, *val_data)[1:],
          text=exercise("The loop, from memory"))

    def ten_epochs_of_adam(model):  # exercises 2 and 3
        optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
        for _ in range(10):
            train_epoch(model, batches, nn.CrossEntropyLoss(), optimizer)
        return sf.evaluate(model, *val_data)[1]
    torch.manual_seed(0)
    adam = ten_epochs_of_adam(sf.SoftmaxClassifier())
    torch.manual_seed(0)
    model = sf.SoftmaxClassifier()
    sgd = sf.fit(model, batches, val_data, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.01), 10,
                 history())["val_accuracy"][-1]
    check(r"gives (\S+)%, where ten epochs of SGD give (\S+)%", adam, sgd, text=exercise("Adam"))
    torch.manual_seed(0)
    hidden = ten_epochs_of_adam(nn.Sequential(nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10)))
    check(r"It gives (\S+)%", hidden, text=exercise("A hidden layer"))

    monkeypatch.chdir(tmp_path)  # exercise 4 writes its figures into lr-0.1/
    model, fast = sf.train_and_plot(train_data, val_data, batches, "lr-0.1", lr=0.1)
    accuracies, losses = fast["val_accuracy"], fast["val_loss"]
    best = accuracies.index(max(accuracies))
    check(r"gives (\S+)% in epoch (\d+), and epochs 100 to 199 average (\S+)%", max(accuracies), best,
          statistics.mean(accuracies[100:]), text=exercise("When to stop"))
    check(r"from epoch (\d+) on, the validation loss rises", losses.index(min(losses)), text=exercise("When to stop"))
    assert losses[-1] > losses[best] and fast["train_loss"][-1] < fast["train_loss"][best]  # over-fitting
    after_200 = sf.evaluate(model, *test_data)[1]

    model, _ = sf.train_and_plot(train_data, val_data, batches, "lr-0.1", epochs=best + 1, lr=0.1)
    predicted, accuracy, _ = sf.evaluate(model, *test_data)
    check(r"images \(.*\): (\S+)%, where exercise 4's 200 epochs give (\S+)%", accuracy, after_200,
          text=exercise("The test set"))
    counts = sf.confusion_matrix(test_data[1], predicted).fill_diagonal_(0)
    row, column = divmod(counts.argmax().item(), 10)
    assert (sf.CLASSES[row], sf.CLASSES[column]) == ("Shirt", "T-shirt/top")
    check(r"taken for T-shirt/top, (\d+) times", counts.max().item(), text=exercise("Confusions"))
    torch.save(model.state_dict(), "mine.pt")
    picture = v2.functional.horizontal_flip(sf.read_picture(REPO / "docs" / "boot-mirrored.png"))
    check(r"Ankle boot (\d+)%", sf.classify_picture(sf.load_model("mine.pt"), picture)[1][9] * 100,
          text=exercise("Your pictures"))


def test_the_readmes_python_blocks_run_as_written(default_run, data_dir, tmp_path, monkeypatch, capsys):
    setup, use = re.findall(r"```python\n(.*?)```", README, re.S)
    monkeypatch.chdir(REPO)  # with data/ and docs/
    exec(setup, names := {})
    assert [len(names[name][1]) for name in ("train_data", "val_data")] == [3500, 500] and len(names["batches"]) == 219
    monkeypatch.chdir(tmp_path)  # laid out as this folder after a default run
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "model.pt").write_bytes((default_run[1] / "model.pt").read_bytes())
    (tmp_path / "docs").mkdir()
    shutil.copy(REPO / "docs" / "boot.png", tmp_path / "docs")
    exec(use, {})
    assert capsys.readouterr().out == use.rsplit("# ", 1)[1]  # what its comment says


@pytest.mark.skipif(not hasattr(os, "fork"), reason="SIGINT sent to a child process, as a terminal does, is POSIX's")
def test_ctrl_c_in_the_real_program_ends_training_and_the_run_finishes(data_dir, tmp_path):
    process = subprocess.Popen([sys.executable, REPO / "softmax_fashion.py", "--epochs", "1000", "--out-dir", tmp_path],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal
    while not process.stdout.readline().startswith("Epoch: 10."):
        pass
    process.send_signal(signal.SIGINT)  # in epoch 11
    out, err = process.communicate(timeout=120)
    assert (process.returncode, err) == (130, "") and "Interrupted in epoch 11" in out and "Test set" in out
    assert json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))["epochs_run"] > 10


def cells_run(notebook):
    """The notebook's cells run in a real kernel, in this folder: (the outputs, the text they print)."""
    from nbclient import NotebookClient  # CI's, with jupytext and ipykernel: a learner needs none of them
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"] == []
    return outputs, "".join(o.get("text", "") for o in outputs)


def test_the_notebook_in_docs_is_the_script_converted_and_runs_in_a_kernel(data_dir):
    import jupytext
    import nbformat
    converted = jupytext.read(REPO / "softmax_fashion.py")
    in_docs = nbformat.read(REPO / "docs" / "softmax_fashion.ipynb", as_version=4)
    code = [[cell.source for cell in notebook.cells if cell.cell_type == "code"] for notebook in (converted, in_docs)]
    assert code[0] == code[1], "make docs/softmax_fashion.ipynb again, as the README says"
    assert (REPO / "docs" / "softmax_fashion.ipynb").stat().st_size <= 1.5e6
    assert sum("image/png" in output.get("data", {}) for cell in in_docs.cells for output in cell.get("outputs", ()))
    outputs, text = cells_run(converted)
    assert sum("image/png" in output.get("data", {}) for output in outputs) >= 6 and "Epoch: 199." in text


def test_the_scripts_cells_run_one_after_another_as_in_vs_code(data_dir):
    import nbformat
    source = (REPO / "softmax_fashion.py").read_text(encoding="utf-8")
    cells = [f"__file__ = {str(REPO / 'softmax_fashion.py')!r}"] + re.split(r"^# %%.*\n", source, flags=re.M)[1:]
    outputs, text = cells_run(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]))
    assert "Epoch: 199." in text and "Test set (10,000 images)" in text
