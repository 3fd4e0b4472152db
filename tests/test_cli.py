"""The command line: what a run leaves, and how it fails."""
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import softmax_fashion as sf
from conftest import SCRIPT

FIGURES = ["accuracy.png", "confusion.png", "loss.png", "predictions.png", "samples.png", "weights.png"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


DISPLAY_VARIABLES = ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")


def headless_env():
    """This process's environment without a display, as on a CI runner."""
    return {k: v for k, v in os.environ.items() if k not in DISPLAY_VARIABLES}


def run_script(*args, **popen_args):
    """Run the script as a user would, in a fresh Python process without a display."""
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], env=headless_env(),
                          capture_output=True, text=True, timeout=600, **popen_args)


def one_error_line(stderr):
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def short_cli_run(data_dir, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("run")
    result = run_script("--epochs", 2, "--data-dir", data_dir, "--out-dir", out_dir, cwd=out_dir)
    return result, out_dir


def test_a_short_run_leaves_six_figures_a_model_and_metrics(short_cli_run):
    result, out_dir = short_cli_run
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(FIGURES + ["metrics.json", "model.pt"])
    for name in FIGURES:
        data = (out_dir / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, name
    assert [line.split(".")[0] for line in result.stdout.splitlines() if line.startswith("Epoch")] == \
        ["Epoch: 0", "Epoch: 1"]
    assert "linear.weight: (10, 784)" in result.stdout and "linear.bias: (10,)" in result.stdout


def test_metrics_json_holds_the_whole_run(short_cli_run, data_dir):
    _, out_dir = short_cli_run
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["settings"] == {
        "epochs": 2, "lr": 0.01, "batch_size": 16, "train_size": 4000, "val_size": 500, "seed": 0,
        "data_dir": str(data_dir), "out_dir": str(out_dir), "device": "cpu",
        "log_every": 10, "show": False,
    }
    assert metrics["interrupted"] is False and metrics["epochs_completed"] == 2
    assert len(metrics["train_loss"]) == len(metrics["val_accuracy"]) == 2
    assert all(0 < loss < 3 for loss in metrics["train_loss"])
    assert all(0 <= accuracy <= 100 for accuracy in metrics["val_accuracy"])
    assert metrics["final_val_accuracy"] == metrics["val_accuracy"][-1]
    assert 50 < metrics["test_accuracy"] <= 100 and 0 < metrics["test_loss"] < 3
    assert list(metrics["test_accuracy_per_class"]) == list(sf.CLASSES)
    assert all(0 <= a <= 100 for a in metrics["test_accuracy_per_class"].values())
    assert 0 < metrics["train_seconds"] < 120
    assert metrics["torch_version"] == torch.__version__
    assert metrics["torchvision_version"].startswith("0.")


def test_saved_model_reproduces_the_reported_test_accuracy(short_cli_run, test_data):
    _, out_dir = short_cli_run
    model = sf.SoftmaxClassifier()
    model.load_state_dict(torch.load(out_dir / "model.pt", weights_only=True))
    accuracy, loss, _ = sf.evaluate(model, *test_data, torch.nn.CrossEntropyLoss())
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert accuracy == metrics["test_accuracy"]
    assert loss == pytest.approx(metrics["test_loss"], rel=1e-6)


def test_same_flags_and_seed_give_the_same_metrics(data_dir, tmp_path):
    args = ["--epochs", "2", "--train-size", "1000", "--val-size", "200", "--seed", "3",
            "--data-dir", str(data_dir), "--out-dir", str(tmp_path)]
    runs = []
    for _ in range(2):
        assert sf.main(args) == 0
        metrics = json.loads((tmp_path / "metrics.json").read_text())
        assert metrics.pop("train_seconds") > 0
        runs.append(metrics)
    assert runs[0] == runs[1]
    assert json.loads((tmp_path / "metrics.json").read_text())["settings"]["seed"] == 3


def test_show_without_a_display_notes_it_and_goes_on(data_dir, tmp_path, monkeypatch, capsys):
    for name in DISPLAY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    args = ["--show", "--epochs", "1", "--data-dir", str(data_dir), "--out-dir", str(tmp_path)]
    assert sf.main(args) == 0
    assert "no display" in capsys.readouterr().out
    assert (tmp_path / "confusion.png").exists()


# --- Bad arguments: one line naming the flag, exit status 2, nothing loaded or written ---

BAD_ARGUMENTS = [
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "2.5"], "--epochs"),
    (["--epochs", "ten"], "--epochs"),
    (["--batch-size", "-16"], "--batch-size"),
    (["--train-size", "0"], "--train-size"),
    (["--val-size", "0"], "--val-size"),
    (["--log-every", "0"], "--log-every"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-0.01"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "fast"], "--lr"),
    (["--seed", "-1"], "--seed"),
    (["--train-size", "60001"], "--train-size"),
    (["--train-size", "500", "--val-size", "500"], "--val-size"),
    (["--device", "tpu"], "--device"),
]
if not torch.cuda.is_available():
    BAD_ARGUMENTS.append((["--device", "cuda"], "--device"))


@pytest.mark.parametrize("argv, flag", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_a_bad_argument_gives_one_line_and_status_2(argv, flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        sf.main([*argv, "--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path / "out")])
    assert exit_.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert flag in line and argv[-1] in line
    assert list(tmp_path.iterdir()) == []  # checked before anything was created


def test_cuda_that_is_missing_names_what_is_available(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit):
        sf.parse_args(["--device", "cuda"])
    assert "available: cpu" in capsys.readouterr().err


def test_the_real_command_line_rejects_a_bad_argument_in_one_line(tmp_path):
    result = run_script("--lr", "-1", cwd=tmp_path)
    assert result.returncode == 2
    assert "--lr" in one_error_line(result.stderr)
    assert list(tmp_path.iterdir()) == []


# --- Bad files and places: one line, exit status 1 ---

def test_a_data_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "data").write_text("not a folder")
    assert sf.main(["--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path / "out")]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "--data-dir" in line and "is a file" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--data-dir", "--out-dir"])
def test_a_folder_that_cannot_be_created(flag, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    args = {"--data-dir": str(tmp_path / "data"), "--out-dir": str(tmp_path / "out")}
    args[flag] = str(tmp_path / "file" / "inside")
    assert sf.main([item for pair in args.items() for item in pair]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"cannot create {flag}" in line


def unwritable_folder(tmp_path):
    """A folder that exists but takes no new files, for this user, root included."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o555)
        return folder
    try:  # root writes anywhere it has permission bits for, but sysfs takes no new files
        with tempfile.TemporaryFile(dir="/sys"):
            pass
    except OSError:
        return Path("/sys")
    pytest.skip("found no folder that this user cannot write to")


def test_an_out_dir_that_cannot_be_written_to(tmp_path, capsys):
    out_dir = unwritable_folder(tmp_path)
    assert sf.main(["--data-dir", str(tmp_path / "data"), "--out-dir", str(out_dir)]) == 1
    assert f"cannot write to --out-dir {out_dir}" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


@pytest.mark.parametrize("damage", ["truncated", "bad header"])
def test_a_damaged_dataset_file_is_named_with_the_fix(damage, data_dir, tmp_path, capsys):
    real_raw = data_dir / "FashionMNIST" / "raw"
    raw_dir = tmp_path / "data" / "FashionMNIST" / "raw"
    raw_dir.mkdir(parents=True)
    for name in sf.RAW_FILES:
        (raw_dir / name).symlink_to(real_raw / name)
    damaged = raw_dir / "train-labels-idx1-ubyte"
    content = damaged.read_bytes()
    damaged.unlink()
    damaged.write_bytes(content[:30_000] if damage == "truncated" else b"<html>" + content[6:])

    assert sf.main(["--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path / "out")]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert str(damaged) in line and "delete it and run again" in line


def test_a_diverging_run_stops_without_drawing_nans(data_dir, tmp_path, capsys):
    argv = ["--lr", "1e38", "--data-dir", str(data_dir), "--out-dir", str(tmp_path)]
    assert sf.main(argv) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "epoch 0" in line and "learning rate" in line and "too high" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.png"]


def test_ctrl_c_saves_the_finished_epochs_and_exits_130(data_dir, tmp_path):
    def sigint_kills():  # a shell may start background jobs with SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--log-every", "1", "--data-dir", str(data_dir), "--out-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=headless_env(), preexec_fn=sigint_kills)
    try:
        for line in process.stdout:
            if line.startswith("Epoch: 2."):
                break
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "Interrupted during epoch" in stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["interrupted"] is True
    assert 3 <= metrics["epochs_completed"] < 200
    assert len(metrics["train_loss"]) == len(metrics["val_accuracy"]) == metrics["epochs_completed"]
    assert all(math.isfinite(loss) for loss in metrics["train_loss"])
    assert metrics["test_accuracy"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy.png", "loss.png", "metrics.json", "samples.png"]
