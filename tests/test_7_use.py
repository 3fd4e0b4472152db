"""Section 7: preparing pictures as Fashion-MNIST's were made, and classifying them with --predict."""
import re
import shutil
import subprocess
import sys

import pytest
import torch
from torchvision.io import decode_image, encode_jpeg, encode_png, write_file
from torchvision.transforms import v2

import softmax_fashion as sf
from conftest import PNG_SIGNATURE, REPO, SCRIPT, headless_env, one_error_line, run_script


def photo_like(image, path):
    """A Fashion-MNIST image as a shop's photo: 6x larger, dark garment on white, a white margin, RGB."""
    picture = (255 - image.reshape(1, 28, 28) * 255).round().to(torch.uint8)  # dark on white
    picture = v2.functional.resize(picture, [168, 168], antialias=True)
    picture = v2.functional.pad(picture, [40], fill=255).expand(3, -1, -1).contiguous()
    write_file(str(path), encode_png(picture) if path.suffix == ".png" else encode_jpeg(picture, quality=90))
    return path


@pytest.fixture
def saved_model(trained_model, tmp_path):
    """An --out-dir holding the 20-epoch model as model.pt."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    sf.save_model(trained_model, out_dir / "model.pt")
    return out_dir


def test_photo_like_files_are_prepared_back_into_what_the_model_knows(trained_model, test_data, tmp_path):
    images, _ = test_data
    originals = images[:100]
    paths = [photo_like(image, tmp_path / f"{i}.{'png' if i % 2 else 'jpg'}") for i, image in enumerate(originals)]
    assert decode_image(str(paths[0])).shape == (3, 248, 248)

    prepared = torch.stack([sf.prepare_picture(decode_image(str(path))) for path in paths])

    assert prepared.shape == (100, 1, 28, 28)
    assert 0 <= prepared.min() and prepared.max() <= 1
    assert prepared[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]].median() == 0  # light on black again
    assert (prepared.flatten(1) - originals).abs().mean() < 0.05
    with torch.no_grad():
        agree = trained_model(prepared).argmax(dim=1) == trained_model(originals).argmax(dim=1)
    assert agree.sum() >= 90, f"only {agree.sum()} of 100 agree"


def test_a_picture_already_light_on_dark_is_not_negated(test_data):
    images, _ = test_data
    picture = (images[0].reshape(1, 28, 28) * 255).round().to(torch.uint8)  # a dataset image as it is
    prepared = sf.prepare_picture(picture)
    assert prepared[0, 14].max() > 0.5  # the garment stays light
    assert (prepared.flatten() - images[0]).abs().mean() < 0.1


def test_a_transparent_background_counts_as_white():
    picture = torch.zeros(4, 60, 40, dtype=torch.uint8)  # RGBA: black and fully transparent...
    picture[:, 10:50, 10:30] = 255                       # ...but for an opaque white rectangle
    picture[:3, 10:50, 10:30] = 40                       # which is dark grey
    prepared = sf.prepare_picture(picture)
    assert prepared.shape == (1, 28, 28)
    assert prepared[0, 14, 14] > 0.7 and prepared[0, 0, 0] == 0  # negated: a light garment on black


def test_predict_prints_the_three_most_probable_classes_and_draws_them(saved_model, test_data, tmp_path, capsys):
    images, labels = test_data
    boot = photo_like(images[0], tmp_path / "boot.jpg")  # the first test image is an ankle boot
    trouser = photo_like(images[2], tmp_path / "trouser.png")
    assert labels[0] == 9 and labels[2] == 1

    assert sf.main(["--predict", str(boot), str(trouser), "--out-dir", str(saved_model)]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"boot\.jpg: Ankle boot \d+%, \S.* \d+%, \S.* \d+%", lines[0]), lines[0]
    assert lines[1].startswith("trouser.png: Trouser ")
    assert lines[2] == "Saved predict.png"
    assert (saved_model / "predict.png").read_bytes().startswith(PNG_SIGNATURE)
    percentages = [int(p) for p in re.findall(r"(\d+)%", lines[0])]
    assert percentages == sorted(percentages, reverse=True)


# --- Errors: one line, naming what is wrong ---

def test_predict_without_a_trained_model_says_to_train_first(tmp_path, capsys):
    picture = photo_like(torch.rand(784), tmp_path / "x.png")
    assert sf.main(["--predict", str(picture), "--out-dir", str(tmp_path / "none")]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"no trained model at {tmp_path / 'none' / 'model.pt'}" in line
    assert f"train one first with 'python softmax_fashion.py --out-dir {tmp_path / 'none'}'" in line


@pytest.mark.parametrize("case", ["missing", "folder", "not a picture", "empty"])
def test_a_file_that_is_not_a_picture_is_named(case, saved_model, tmp_path, capsys):
    path = {"missing": tmp_path / "nope.png", "folder": tmp_path, "not a picture": SCRIPT,
            "empty": tmp_path / "empty.jpg"}[case]
    if case == "empty":
        path.write_bytes(b"")
    assert sf.main(["--predict", str(path), "--out-dir", str(saved_model)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert str(path) in line
    assert {"missing": "no such file", "folder": "not a file"}.get(case, "not a picture") in line
    assert not (saved_model / "predict.png").exists()


@pytest.mark.parametrize("content, reason", [
    ("text", "torch.load cannot read it"),
    ("empty", "torch.load cannot read it"),
    ("other shapes", "size mismatch for linear.weight"),
])
def test_a_model_file_that_does_not_fit_the_model_is_named(content, reason, tmp_path, capsys):
    model_path = tmp_path / "model.pt"
    if content == "other shapes":
        torch.save({"linear.weight": torch.zeros(5, 784), "linear.bias": torch.zeros(5)}, model_path)
    else:
        model_path.write_text("hello" if content == "text" else "")
    picture = photo_like(torch.rand(784), tmp_path / "x.png")
    assert sf.main(["--predict", str(picture), "--out-dir", str(tmp_path)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"{model_path} does not hold this tutorial's model ({reason}" in line


def test_predict_with_no_picture_is_a_usage_error(capsys):
    assert sf.main(["--predict"]) == 2
    assert "--predict" in one_error_line(capsys.readouterr().err)


def test_the_real_command_line_classifies_a_picture(saved_model, test_data, tmp_path):
    picture = photo_like(test_data[0][1], tmp_path / "pullover.png")  # the second test image is a pullover
    result = run_script("--predict", picture, "--out-dir", saved_model, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pullover.png: Pullover ")
    assert result.stderr == ""


# --- The README's Python blocks run as written ---

def readme_block(containing):
    """The README's ```python block that contains ``containing``."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    [block] = [block for block in blocks if containing in block]
    return block


def run_block(block, folder):
    return subprocess.run([sys.executable, "-c", block], cwd=folder, env=headless_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def repository_folder(trained_model, real_raw_dir, tmp_path):
    """A folder laid out as the repository after a default run: the script, data/, docs/, outputs/model.pt."""
    (tmp_path / "softmax_fashion.py").symlink_to(SCRIPT)
    (tmp_path / "data").symlink_to(real_raw_dir.parents[1])
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    (tmp_path / "outputs").mkdir()
    sf.save_model(trained_model, tmp_path / "outputs" / "model.pt")
    return tmp_path


def test_the_readmes_loading_block_prints_the_three_most_probable_classes(repository_folder):
    result = run_block(readme_block("sf.prepare_picture"), repository_folder)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"Ankle boot \d+%, \S[^,]* \d+%, \S[^,]* \d+%\n", result.stdout), result.stdout


def test_the_readmes_drawing_block_draws_the_pictures_it_shows(tmp_path):
    (tmp_path / "docs").mkdir()
    result = run_block(readme_block("ImageDraw"), tmp_path)
    assert result.returncode == 0, result.stderr
    drawn = sorted(p.name for p in (tmp_path / "docs").iterdir())
    assert drawn == ["boot-mirrored.png", "boot.png", "trousers.png", "tshirt.png"]
    for name in drawn:  # the same pixels as the pictures in docs/
        assert torch.equal(decode_image(str(tmp_path / "docs" / name)), decode_image(str(REPO / "docs" / name)))


def test_the_readmes_mirror_block_shows_the_accuracy_falling(repository_folder):
    result = run_block(readme_block("flip(-1)"), repository_folder)
    assert result.returncode == 0, result.stderr
    as_they_are, mirrored = map(float, re.fullmatch(r"([\d.]+)% as they are, ([\d.]+)% mirrored\n",
                                                     result.stdout).groups())
    assert as_they_are > 75 and mirrored < as_they_are - 10


def test_the_readmes_notebook_block_trains(repository_folder):
    result = run_block(readme_block("sf.fit("), repository_folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("Epoch: 19.")
