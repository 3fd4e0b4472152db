"""The slow checks, which CI runs: each number that README.md states, its exercises, its code, and the notebook."""
import json
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.transforms import v2

import softmax_fashion as sf
from conftest import REPO

pytestmark = pytest.mark.ci
README = (REPO / "README.md").read_text(encoding="utf-8")
NUMBER = r"-?\d+(?:\.\d+)?"


def close(stated, measured, percent=True):  # as another CPU may leave them: a validation image (0.2 points) for one
    # decimal, two of its last digit for more, 1 for a whole percentage; other whole numbers exactly
    decimals = len(stated.partition(".")[2])
    return abs(float(stated) - measured) <= (0.2 if decimals == 1 else 2 * 10**-decimals if decimals else percent)


def check(pattern, *measured, text=README):
    """The numbers that ``pattern``'s groups find in ``text`` are those ``measured``."""
    [found] = re.findall(pattern, " ".join(text.split()))
    found = found if isinstance(found, tuple) else (found,)
    assert all(close(s, m) for s, m in zip(found, measured, strict=True)), (pattern, found, measured)


def program(*argv):
    """The script as a learner runs it, with its own warnings as errors: (output, metrics.json)."""
    done = subprocess.run([sys.executable, "-W", "error:::__main__", REPO / "softmax_fashion.py", *map(str, argv)],
                          capture_output=True, text=True, cwd=REPO)
    assert (done.returncode, done.stderr) == (0, "")
    metrics = argv[-1] / "metrics.json"
    return done.stdout, metrics.exists() and json.loads(metrics.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def default_run(data_dir, tmp_path_factory):  # then --predict on docs/'s pictures: (output, --out-dir, metrics)
    out_dir = tmp_path_factory.mktemp("default") / "outputs"
    out, metrics = program("--out-dir", out_dir)
    pictures = [REPO / "docs" / f"{name}.png" for name in ("tshirt", "trousers", "boot", "boot-mirrored")]
    return out + program("--predict", *pictures, "--out-dir", out_dir)[0], out_dir, metrics


def test_a_default_run_prints_every_line_and_gives_every_number_of_the_readme(default_run, test_data, monkeypatch,
                                                                             capsys):
    for block in re.findall(r"```text\n(.*?)```", README, re.S):
        for line in block.splitlines()[block.startswith("Figures"):]:  # not the path, which is the learner's
            assert line == "..." or any(all(close(s, float(p), s + "%" in line) for s, p in zip(
                re.findall(NUMBER, line), re.findall(NUMBER, printed))) for printed in default_run[0].splitlines()
                if re.sub(NUMBER, "#", printed) == re.sub(NUMBER, "#", line)), line
    model, (images, labels), accuracies = sf.load_model(default_run[1] / "model.pt"), test_data, default_run[2]

    def accuracy(pictures, of=None):  # on all the test images, or on one class's
        right = sf.evaluate(model, pictures.reshape(-1, 784), labels)[0] == labels
        return 100 * right[labels == sf.CLASSES.index(of) if of else ...].float().mean().item()
    pictures = images.view(-1, 1, 28, 28)
    mirrored, shifted = v2.functional.horizontal_flip(pictures), [v2.functional.affine(
        pictures, angle=0.0, translate=[pixels, 0], scale=1.0, shear=[0.0]) for pixels in (0, 2, 4)]
    check(r"mirrored left to right: (\S+)%", accuracy(mirrored))
    check(r"boots drop from (\d+)% to (\d+)%", accuracy(pictures, "Ankle boot"), accuracy(mirrored, "Ankle boot"))
    check(r"right: (\S+)% \(trousers drop from (\d+)% to (\d+)%\); 4 pixels: (\S+)%", accuracy(shifted[1]),
          accuracy(pictures, "Trouser"), accuracy(shifted[1], "Trouser"), accuracy(shifted[2]))
    check(r"and centred: (\S+)%", accuracy(v2.functional.center_crop(v2.functional.resize(pictures, [21, 21]), 28)))
    slices = [sf.evaluate(model, images[i:i + 500], labels[i:i + 500])[1] for i in range(0, 10_000, 500)]
    check(r"model gets from (\S+)% to (\S+)%\.", min(slices), max(slices))
    check(r"ankle boot gets (\d+)%, against (\d+)% for sneaker", *100 * model.predict_proba(images[:1])[0, [9, 7]])
    check(r"hardest \((\d+) right\)", sf.confusion_matrix(labels, sf.evaluate(model, images, labels)[0])[6, 6])
    check(r"near (\S+) by epoch 100: .*? (\S+) above its lowest", (v := accuracies["val_loss"])[100], v[199] - min(v))
    accuracies = accuracies["val_accuracy"]
    check(r"rises from (\d+)% after the first epoch to (\d+)% by epoch 50, then creeps up to (\d+)%", accuracies[0],
          accuracies[50], sum(accuracies[150:]) / 50)
    use = re.findall(r"```python\n(.*?)```", README, re.S)[1]  # the README's use of a model, in a folder laid out
    (default_run[1].parent / "docs").mkdir()  # as this one after a default run
    (default_run[1].parent / "docs" / "boot.png").write_bytes((REPO / "docs" / "boot.png").read_bytes())
    monkeypatch.chdir(default_run[1].parent)
    exec(use, {})
    assert capsys.readouterr().out == use.rsplit("# ", 1)[1]  # what its comment says


@pytest.mark.parametrize("row", re.findall(r"^\| `python softmax_fashion.py (.*?)` \| (.*?) \|$", README, re.M))
def test_things_to_try_give_what_the_table_says(row, data_dir, tmp_path):
    metrics = program(*row[0].split(), "--out-dir", tmp_path)[1]
    check(r"(\S+)%, (?:.* )?(\S+)% \((\S+)%\)", metrics["val_accuracy"][0], metrics["val_accuracy"][-1],
          metrics["test_accuracy"], text=row[1])


def test_the_exercises_give_their_numbers_from_the_readmes_first_block(data_dir, test_data, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # with data/
    exec(re.findall(r"```python\n(.*?)```", README, re.S)[0], names := {})
    train_data, val_data, batches = names["train_data"], names["val_data"], names["batches"]
    loss_fn = nn.CrossEntropyLoss()
    assert [len(train_data[1]), len(val_data[1]), len(batches)] == [3500, 500, 219]

    def seeded(model_class=sf.SoftmaxClassifier, epochs=1, optimizer=torch.optim.SGD, lr=0.01):
        torch.manual_seed(0)
        model = model_class()
        optimizer = optimizer(model.parameters(), lr=lr)  # made once, before the loop
        losses = [sf.train_epoch(model, batches, loss_fn, optimizer) for _ in range(epochs)]
        return losses[-1], *sf.evaluate(model, *val_data)[1:]
    check(r"returns (\S+), and .* accuracy of (\S+)% and a loss of (\S+)\.", *seeded())
    check(r"gives (\S+)%, where ten epochs of SGD \(0 to 9\) give (\S+)%", seeded(epochs=10, optimizer=torch.optim.Adam,
          lr=0.001)[1], seeded(epochs=10)[1])
    hidden = seeded(lambda: nn.Sequential(nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10)), 10, torch.optim.Adam,
                    0.001)
    check(r"It gives (\S+)%", hidden[1])

    monkeypatch.chdir(tmp_path)  # exercise 4 writes its figures into lr-0.1/
    model, fast = sf.train_and_plot(train_data, val_data, batches, Path("lr-0.1"), lr=0.1)
    accuracies, losses = fast["val_accuracy"], fast["val_loss"]
    best = accuracies.index(max(accuracies))
    check(r"gives (\S+)% in epoch (\d+), and epochs 100 to 199 average (\S+)%.* from epoch (\d+) on", max(accuracies),
          best, sum(accuracies[100:]) / 100, losses.index(min(losses)))
    assert losses[-1] > losses[best] and fast["train_loss"][-1] < fast["train_loss"][best]  # over-fitting
    after_200 = sf.evaluate(model, *test_data)[1]
    model, _ = sf.train_and_plot(train_data, val_data, batches, Path("best"), epochs=best + 1, lr=0.1)
    predicted, accuracy, _ = sf.evaluate(model, *test_data)
    check(r"\): (\S+)%, where `model_200` gives (\S+)%", accuracy, after_200)
    counts = sf.confusion_matrix(test_data[1], predicted).fill_diagonal_(0)
    assert divmod(counts.argmax().item(), 10) == (sf.CLASSES.index("Shirt"), sf.CLASSES.index("T-shirt/top"))
    check(r"T-shirt/top, (\d+) times", counts.max().item())
    torch.save(model.state_dict(), "mine.pt")
    picture = v2.functional.horizontal_flip(sf.read_picture(REPO / "docs" / "boot-mirrored.png"))
    _, probabilities = sf.classify_picture(sf.load_model("mine.pt"), picture)
    check(r"sf.top_classes`: Ankle boot (\d+)%", 100 * probabilities[9])


def test_the_script_is_a_module_a_program_and_a_notebook_that_runs_in_a_kernel(data_dir, tmp_path, monkeypatch,
                                                                               capsys):
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(REPO / "softmax_fashion.py"), run_name="softmax_fashion")  # as `import softmax_fashion`
    monkeypatch.setitem(sys.modules, "ipykernel", sys)  # in a Jupyter kernel, as `%run softmax_fashion.py --help`
    monkeypatch.setattr(sys, "argv", [str(REPO / "softmax_fashion.py"), "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(REPO / "softmax_fashion.py"), run_name="__main__")
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("usage: softmax_fashion.py")
    assert list(tmp_path.iterdir()) == []  # nothing written
    monkeypatch.undo()
    import jupytext  # CI's, with nbclient and ipykernel: a learner needs none of them
    import nbformat
    from nbclient import NotebookClient

    def cells_run(notebook):  # in a real kernel, in this folder, without an error: the text that they print
        NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
                       ).execute()
        outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
        assert [output for output in outputs if output.output_type == "error" or output.get("name") == "stderr"] == []
        assert sum("image/png" in output.get("data", {}) for output in outputs) >= 6  # inline, where they are drawn
        return "".join(output.get("text", "") for output in outputs)
    converted = jupytext.read(REPO / "softmax_fashion.py")
    in_docs = nbformat.read(REPO / "docs" / "softmax_fashion.ipynb", as_version=4)
    code = [[cell.source for cell in notebook.cells if cell.cell_type == "code"] for notebook in (converted, in_docs)]
    assert code[0] == code[1], "make docs/softmax_fashion.ipynb again, as the README says"
    assert (REPO / "docs" / "softmax_fashion.ipynb").stat().st_size <= 1.5e6 and "Epoch: 199." in str(in_docs)
    assert "Epoch: 199." in cells_run(converted)
    source = (REPO / "softmax_fashion.py").read_text(encoding="utf-8")  # VS Code: __file__ set, no cell tags
    cells = [f"__file__ = {str(REPO / 'softmax_fashion.py')!r}"] + re.split(r"^# %%.*\n", source, flags=re.M)[1:]
    text = cells_run(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell) for cell in cells]))
    assert "Epoch: 199." in text and "Test set (10,000 images)" in text
