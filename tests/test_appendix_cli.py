"""The appendix: the command line, what a run leaves, and how it fails, is stopped and runs side by side."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from torchvision.io import decode_image

import softmax_fashion as sf
from conftest import (FIGURES, PNG_SIGNATURE, SCRIPT, headless_env, leftovers, offline_copy_installed,
                      one_error_line, run_script)

OUTPUTS = sorted(FIGURES + ["metrics.json", "model.pt"])


def strict_json(path):
    """The file's JSON, refusing NaN and Infinity, which JavaScript's parser (among others) rejects."""
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


def assert_complete_outputs(out_dir):
    """The run's eight files, each whole: PNGs that decode, JSON that parses, a model that loads."""
    assert sorted(p.name for p in out_dir.iterdir()) == OUTPUTS
    for name in FIGURES:
        assert decode_image(str(out_dir / name)).shape[0] in (3, 4), name
    sf.load_model(out_dir / "model.pt")
    return strict_json(out_dir / "metrics.json")


@pytest.fixture(scope="module")
def short_cli_run(data_dir, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("run")
    result = run_script("--epochs", 2, "--data-dir", data_dir, "--out-dir", out_dir, cwd=out_dir)
    return result, out_dir


def test_a_short_run_leaves_six_figures_a_model_and_metrics(short_cli_run):
    result, out_dir = short_cli_run
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert_complete_outputs(out_dir)
    for name in FIGURES:
        data = (out_dir / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, name
    lines = result.stdout.splitlines()
    assert lines[0] == f"Figures, model.pt and metrics.json go to {out_dir.resolve()}"
    assert [line.split(".")[0] for line in lines if line.startswith("Epoch")] == ["Epoch: 0", "Epoch: 1"]
    assert "linear.weight: (10, 784)" in result.stdout and "linear.bias: (10,)" in result.stdout
    assert "by hand:" in result.stdout and "largest difference from PyTorch" in result.stdout


def test_metrics_json_holds_the_whole_run(short_cli_run, data_dir):
    _, out_dir = short_cli_run
    metrics = strict_json(out_dir / "metrics.json")
    assert metrics["settings"] == {
        "epochs": 2, "lr": 0.01, "batch_size": 16, "shuffle": False, "train_size": 4000, "val_size": 500,
        "seed": 0, "data_dir": str(data_dir), "out_dir": str(out_dir), "device": "cpu",
        "log_every": 10, "show": False,
    }
    assert metrics["interrupted"] is False and metrics["epochs_run"] == 2
    assert len(metrics["train_loss"]) == len(metrics["val_accuracy"]) == 2
    assert all(0 < loss < 3 for loss in metrics["train_loss"])
    assert metrics["final_val_accuracy"] == metrics["val_accuracy"][-1]
    assert 50 < metrics["test_accuracy"] <= 100 and 0 < metrics["test_loss"] < 3
    assert list(metrics["test_accuracy_per_class"]) == list(sf.CLASSES)
    assert all(0 <= a <= 100 for a in metrics["test_accuracy_per_class"].values())
    assert 0 < metrics["train_seconds"] < 120
    assert metrics["torch_version"] == torch.__version__


def test_the_saved_model_reproduces_the_reported_test_accuracy(short_cli_run, test_data):
    _, out_dir = short_cli_run
    _, accuracy, loss = sf.evaluate(sf.load_model(out_dir / "model.pt"), *test_data)
    metrics = strict_json(out_dir / "metrics.json")
    assert accuracy == metrics["test_accuracy"]
    assert loss == pytest.approx(metrics["test_loss"], rel=1e-6)


def test_same_flags_and_seed_give_the_same_metrics(data_dir, tmp_path):
    args = ["--epochs", "2", "--train-size", "1000", "--val-size", "200", "--seed", "3", "--shuffle",
            "--data-dir", str(data_dir), "--out-dir", str(tmp_path)]
    runs = []
    for _ in range(2):
        assert sf.main(args) == 0
        metrics = strict_json(tmp_path / "metrics.json")
        assert metrics.pop("train_seconds") > 0
        runs.append(metrics)
    assert runs[0] == runs[1]
    assert runs[0]["settings"]["seed"] == 3 and runs[0]["settings"]["shuffle"] is True


def test_show_without_a_display_notes_it_and_goes_on(data_dir, tmp_path):
    result = run_script("--show", "--epochs", 1, "--data-dir", data_dir, "--out-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--show: no display here" in result.stdout
    assert (tmp_path / "confusion.png").exists()


def test_a_class_without_test_images_gives_strict_json(tiny_debian_copy, tmp_path):
    # The tiny dataset's 7 test images are of classes 0 to 6: Sneaker, Bag and Ankle boot have none.
    out_dir = tmp_path / "out"
    args = ["--train-size", "20", "--val-size", "10", "--epochs", "1", "--batch-size", "4",
            "--data-dir", str(tmp_path / "data"), "--out-dir", str(out_dir)]
    assert sf.main(args) == 0
    metrics = strict_json(out_dir / "metrics.json")
    per_class = metrics["test_accuracy_per_class"]
    assert [per_class[name] for name in ("Sneaker", "Bag", "Ankle boot")] == [None, None, None]
    assert all(isinstance(per_class[name], float) for name in sf.CLASSES[:7])


# --- The command line: bad arguments give one line naming the flag, exit status 2, nothing created ---

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
if not torch.accelerator.is_available():
    BAD_ARGUMENTS.append((["--device", "cuda"], "--device"))


@pytest.mark.parametrize("argv, flag", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_a_bad_argument_gives_one_line_and_status_2(argv, flag, tmp_path, capsys):
    assert sf.main([*argv, "--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert flag in line and argv[-1] in line
    assert list(tmp_path.iterdir()) == []  # checked before anything was created


def test_main_returns_the_exit_status_instead_of_exiting(capsys):
    assert sf.main(["--help"]) == 0
    assert "--predict IMAGE" in capsys.readouterr().out
    assert sf.main(["--no-such-flag"]) == 2


def test_a_missing_accelerator_names_what_is_available(capsys):
    if torch.accelerator.is_available():
        pytest.skip("this machine has an accelerator")
    assert sf.main(["--device", "cuda"]) == 2
    assert "available: cpu" in capsys.readouterr().err


def test_the_real_command_line_rejects_a_bad_argument_in_one_line(tmp_path):
    result = run_script("--lr", "-1", cwd=tmp_path)
    assert result.returncode == 2
    assert "--lr" in one_error_line(result.stderr)
    assert list(tmp_path.iterdir()) == []


def test_output_piped_into_a_program_that_stops_reading_ends_quietly(data_dir, tmp_path):
    # As in `python softmax_fashion.py | head -1`.
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--data-dir", str(data_dir), "--out-dir", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=headless_env())
    first_line = process.stdout.readline()
    process.stdout.close()
    _, stderr = process.communicate(timeout=120)
    assert first_line.startswith("Figures, model.pt and metrics.json go to")
    assert process.returncode == 1 and stderr == ""


# --- Bad folders: one line, exit status 1 ---

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
    assert f"cannot create {flag}" in one_error_line(capsys.readouterr().err)


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


def test_a_diverging_run_stops_without_drawing_nans(data_dir, tmp_path, capsys):
    argv = ["--lr", "1e38", "--data-dir", str(data_dir), "--out-dir", str(tmp_path)]
    assert sf.main(argv) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "epoch 0" in line and "learning rate" in line and "too high" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.png"]


# --- Files are never left half-written ---

@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_write_leaves_neither_a_half_file_nor_a_temporary_one(failure, tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"from": "the run before"}')

    def write_half_then_fail(tmp):
        tmp.write_text('{"train_loss": [1.0,')
        raise failure

    with pytest.raises(sf.UserError if isinstance(failure, OSError) else KeyboardInterrupt) as error:
        sf.write_atomically(path, write_half_then_fail)
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert path.read_text() == '{"from": "the run before"}'  # the previous file, untouched
    if isinstance(failure, OSError):
        assert str(error.value) == f"could not write {path}: [Errno 28] No space left on device"


def test_written_files_get_the_usual_permissions(tmp_path):
    sf.write_atomically(tmp_path / "a.txt", lambda tmp: tmp.write_text("a"))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_two_processes_decompress_into_one_fresh_data_folder_at_once(tmp_path):
    if not offline_copy_installed():
        pytest.skip("needs the offline copy: apt-get install dataset-fashion-mnist")
    # Each process imports the script (seconds), says it is ready, and waits for the word "go", so
    # that both find the data folder empty and decompress the same files at the same moment.
    code = ("import pathlib, sys, time\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "import softmax_fashion as sf\n"
            "pathlib.Path(sys.argv[2]).touch()\n"
            "while not pathlib.Path(sys.argv[3]).exists():\n"
            "    time.sleep(0.01)\n"
            "sf.load_fashion_mnist(sys.argv[4], train=False)\n")
    go, data_dir = tmp_path / "go", tmp_path / "data"
    processes = [subprocess.Popen([sys.executable, "-c", code, str(SCRIPT.parent), str(tmp_path / f"ready{i}"),
                                   str(go), str(data_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
    try:
        while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
            assert all(process.poll() is None for process in processes), processes[0].communicate()
            time.sleep(0.01)
        go.touch()
        results = [process.communicate(timeout=120) for process in processes]
    finally:
        for process in processes:
            process.kill()

    for process, (stdout, stderr) in zip(processes, results):
        assert process.returncode == 0, stderr
        assert "Decompressing the offline copy" in stdout  # both found the folder empty
    raw_dir = data_dir / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(sf.RAW_FILES)
    for name, md5 in sf.RAW_FILES.items():
        assert hashlib.md5((raw_dir / name).read_bytes()).hexdigest() == md5, name
    assert leftovers(tmp_path) == []


def test_two_runs_side_by_side_share_one_output_folder(data_dir, tmp_path):
    args = [sys.executable, str(SCRIPT), "--epochs", "1", "--data-dir", str(data_dir), "--out-dir", str(tmp_path)]
    runs = [subprocess.Popen([*args, "--seed", str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=headless_env()) for seed in (1, 2)]
    results = [run.communicate(timeout=600) for run in runs]
    for run, (_, stderr) in zip(runs, results):
        assert run.returncode == 0, stderr
    assert leftovers(tmp_path) == []
    metrics = assert_complete_outputs(tmp_path)  # each file whole: the files of whichever run wrote last
    assert metrics["settings"]["seed"] in (1, 2)


def test_the_default_folders_are_the_scripts_own_wherever_it_runs_from(real_raw_dir, tmp_path):
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    (repo / "data").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(SCRIPT, repo)
    (repo / "data" / "FashionMNIST").symlink_to(real_raw_dir.parent)
    result = run_script("--epochs", 1, script=repo / "softmax_fashion.py", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert list(elsewhere.iterdir()) == []
    assert f"go to {repo / 'outputs'}\n" in result.stdout
    assert_complete_outputs(repo / "outputs")


# --- Ctrl-C and SIGTERM ---

def start_training(data_dir, out_dir, *args):
    """The script, training with a progress line every epoch, as a user starts it."""
    def default_signals():  # a shell may start background jobs with SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), "--log-every", "1", "--data-dir", str(data_dir), "--out-dir", str(out_dir),
         *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=headless_env(),
        preexec_fn=default_signals)


def read_until(process, start):
    """The lines the process prints, up to and including the first that starts with ``start``."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(start):
            return lines
    pytest.fail(f"the process ended without printing {start!r}:\n{''.join(lines)}{process.stderr.read()}")


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["Ctrl-C", "SIGTERM"])
def test_a_signal_during_training_makes_a_shorter_run_with_every_file(signum, status, data_dir, tmp_path):
    process = start_training(data_dir, tmp_path)
    try:
        read_until(process, "Epoch: 2.")
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()

    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    assert f"{signal.Signals(signum).name} stopped training in epoch" in stdout
    metrics = assert_complete_outputs(tmp_path)
    assert metrics["interrupted"] is True
    assert 3 <= metrics["epochs_run"] < 200
    assert len(metrics["train_loss"]) == len(metrics["val_accuracy"]) == metrics["epochs_run"]
    # The files describe one model: the one in model.pt.
    test_images, test_labels = sf.load_fashion_mnist(data_dir, train=False)
    _, accuracy, _ = sf.evaluate(sf.load_model(tmp_path / "model.pt"), test_images, test_labels)
    assert accuracy == metrics["test_accuracy"]


def test_a_second_ctrl_c_quits_at_once_leaving_no_temporary_files(data_dir, tmp_path):
    process = start_training(data_dir, tmp_path)
    try:
        read_until(process, "Epoch: 2.")
        process.send_signal(signal.SIGINT)
        read_until(process, "SIGINT stopped training")
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()

    assert process.returncode == 130
    assert one_error_line(stderr) == "Interrupted by SIGINT."
    assert "Saved metrics.json, now with the test results" not in stdout  # it did not finish the run
    assert leftovers(tmp_path) == []
    assert (tmp_path / "model.pt").exists()  # saved as soon as training ended


def test_sigterm_while_decompressing_leaves_no_temporary_files(tmp_path):
    if not offline_copy_installed():
        pytest.skip("needs the offline copy: apt-get install dataset-fashion-mnist")
    process = start_training(tmp_path / "data", tmp_path / "out")
    try:
        read_until(process, "Decompressing")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()

    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert leftovers(tmp_path) == []
    raw_dir = tmp_path / "data" / "FashionMNIST" / "raw"  # not made yet if the signal came first
    for path in raw_dir.iterdir() if raw_dir.exists() else []:  # whatever was finished is whole
        assert hashlib.md5(path.read_bytes()).hexdigest() == sf.RAW_FILES[path.name]

