"""Sections 1 to 7: what the tutorial teaches, checked on the real data."""
import re
import shutil

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset
from torchvision import datasets, transforms
from torchvision.transforms import v2

import softmax_fashion as sf
from conftest import REPO


# --- 1. The data ---

def test_the_real_files_split_in_dataset_order_give_the_pixels_of_to_tensor(tutorial_data, data_dir):
    raw_dir = data_dir / "FashionMNIST" / "raw"
    assert all(sf.check_integrity(raw_dir / name, md5) for name, md5 in sf.RAW_FILES.items())
    assert [f"{name}.gz" for name in sf.RAW_FILES] == [name for name, _ in datasets.FashionMNIST.resources]
    assert list(sf.CLASSES) == datasets.FashionMNIST.classes
    (train_images, train_labels), (val_images, val_labels) = tutorial_data
    assert train_images.shape == (3500, 784) and val_images.shape == (500, 784)
    assert train_images.dtype == torch.float32 and train_labels.dtype == torch.int64
    # Bit for bit what the original's ToTensor() makes of samples 0..3999, in order, unshuffled.
    original = datasets.FashionMNIST(data_dir, train=True, transform=transforms.ToTensor())
    for i in (0, 1234, 3499, 3500, 3999):
        image, label = original[i]
        ours = (train_images, train_labels) if i < 3500 else (val_images, val_labels)
        assert torch.equal(ours[0][i % 3500], image.view(784)) and ours[1][i % 3500] == label


def test_the_offline_copy_is_decompressed_checked_and_read_by_torchvision(tiny_debian_copy, tmp_path):
    _, made = tiny_debian_copy
    sf.prepare_data(tmp_path / "data")
    images, labels = sf.load_fashion_mnist(tmp_path / "data", count=20)
    assert sorted(p.name for p in (tmp_path / "data" / "FashionMNIST" / "raw").iterdir()) == sorted(sf.RAW_FILES)
    assert torch.equal(images, made["train"][0][:20].reshape(20, 784).float() / 255)
    assert torch.equal(labels, made["train"][1][:20].long())


# --- 2. The model, and the softmax, loss and gradient by hand ---

@pytest.mark.parametrize("shape", [(5, 784), (5, 28, 28), (5, 1, 28, 28)])
def test_the_model_gives_ten_logits_and_ten_probabilities_per_image(shape):
    model = sf.SoftmaxClassifier()
    assert {name: tuple(t.shape) for name, t in model.state_dict().items()} == {
        "linear.weight": (10, 784), "linear.bias": (10,)}
    images = torch.rand(shape)
    assert model(images).shape == (5, 10)
    probabilities = model.predict_proba(images)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(5))
    assert torch.equal(probabilities.argmax(dim=1), model(images).argmax(dim=1))


def test_the_worked_example_in_the_text_is_right():
    z = torch.tensor([2.0, 1.0, 0.0])
    p = torch.softmax(z, dim=0)
    loss = torch.nn.functional.cross_entropy(z.unsqueeze(0), torch.tensor([0]))
    text = (REPO / "softmax_fashion.py").read_text(encoding="utf-8")
    assert f"p = ({p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f})" in text
    assert f"-log {p[0]:.3f} = {loss:.2f}" in text
    assert f"({p[0] - 1:.3f}, {p[1]:.3f}, {p[2]:.3f})" in text  # the gradient, p - one_hot(0)


@pytest.mark.parametrize("scale", [1, 1000], ids=["trained", "logits in the thousands"])
def test_by_hand_equals_pytorch_and_prints_the_real_numbers(scale, trained_model, tutorial_data, capsys):
    model = sf.SoftmaxClassifier()
    model.load_state_dict({name: tensor * scale for name, tensor in trained_model.state_dict().items()})
    _, (images, labels) = tutorial_data
    for i in range(3):  # assert_close inside raises if any number differs from PyTorch's
        sf.follow_one_image(model, images[i], labels[i])
    lines = capsys.readouterr().out.splitlines()
    assert "Traceback" not in lines and lines[0].startswith("One validation image, a ")
    logits = model(images[2:3])[0]
    numbers = [float(x) for x in lines[-4].split()[2:]]
    assert numbers == pytest.approx(logits.tolist(), abs=0.006)
    probabilities = [float(x) for x in lines[-3].split()[2:]]
    assert probabilities == pytest.approx(torch.softmax(logits, 0).tolist(), abs=0.006)


# --- 3. Training ---

def test_batches_are_the_ones_a_dataloader_cuts():
    images, labels = torch.arange(35 * 784.0).view(35, 784), torch.arange(35)
    batches = sf.make_batches(images, labels, batch_size=16)
    expected = list(DataLoader(TensorDataset(images, labels), batch_size=16))
    assert [len(y) for _, y in batches] == [16, 16, 3]
    for (x, y), (expected_x, expected_y) in zip(batches, expected, strict=True):
        assert torch.equal(x, expected_x) and torch.equal(y, expected_y)


def test_shuffling_gives_each_epoch_a_new_order_and_reproducible_weights_of_their_own(tutorial_data):
    generator, labels = torch.Generator().manual_seed(0), torch.arange(35)
    first, second = [torch.cat([y for _, y in sf.make_batches(torch.zeros(35, 784), labels, 16, generator)])
                     for _ in range(2)]
    assert not torch.equal(first, second) and torch.equal(first.sort().values, labels)

    def train(seed):
        torch.manual_seed(0)
        model = sf.SoftmaxClassifier()
        sf.fit(model, *tutorial_data, epochs=2, generator=None if seed is None else torch.Generator().manual_seed(seed))
        return model.linear.weight
    shuffled, again, in_order = train(0), train(0), train(None)
    assert torch.equal(shuffled, again) and not torch.allclose(shuffled, in_order, atol=1e-4)


def original_training(data_dir, epochs, seed=0):
    """The original's program: a DataLoader over a list of (ToTensor image, label) pairs."""
    dataset = datasets.FashionMNIST(data_dir, train=True, transform=transforms.ToTensor())
    pairs = [dataset[i] for i in range(4000)]
    torch.manual_seed(seed)
    model = sf.SoftmaxClassifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    criterion = torch.nn.CrossEntropyLoss()
    accuracies = []
    for _ in range(epochs):
        for images, labels in DataLoader(pairs[:3500], batch_size=16):
            optimizer.zero_grad()
            loss = criterion(model(images.view(-1, 28 * 28)), labels)
            loss.backward()
            optimizer.step()
        correct = 0
        with torch.no_grad():
            for images, labels in DataLoader(pairs[3500:], batch_size=16):
                correct += (model(images.view(-1, 28 * 28)).argmax(dim=1) == labels).sum().item()
        accuracies.append(100 * correct / 500)
    return model, accuracies


def test_training_ends_with_the_weights_of_the_original_program(tutorial_data, data_dir, capsys):
    reference, reference_accuracies = original_training(data_dir, epochs=3)
    torch.manual_seed(0)
    model = sf.SoftmaxClassifier()
    start = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    history = sf.fit(model, *tutorial_data, epochs=3, log_every=2)

    for name, expected in reference.state_dict().items():
        assert not torch.allclose(expected, start[name], atol=1e-3), "training did not move the weights"
        torch.testing.assert_close(model.state_dict()[name], expected, rtol=0, atol=1e-5)
    assert history["val_accuracy"] == reference_accuracies
    assert history["val_accuracy"][0] == pytest.approx(67, abs=3)  # the original: 67.2 after epoch 0
    assert history["train_loss"][0] > history["train_loss"][1] > history["train_loss"][2]
    printed = [line.split(".")[0] for line in capsys.readouterr().out.splitlines()]
    assert printed == ["Epoch: 0", "Epoch: 2"]  # every 2nd epoch, numbered from 0, and the last


def test_training_by_hand_ends_with_the_weights_of_autograd(tutorial_data):
    def train(by_hand):
        torch.manual_seed(0)
        model = sf.SoftmaxClassifier()
        return model, sf.fit(model, *tutorial_data, epochs=3, by_hand=by_hand, log_every=10)
    (by_hand, history), (autograd, autograd_history) = train(True), train(False)
    for name, expected in autograd.state_dict().items():
        torch.testing.assert_close(by_hand.state_dict()[name], expected, rtol=0, atol=1e-5)
    assert history["val_accuracy"] == autograd_history["val_accuracy"]
    assert history["train_loss"] == pytest.approx(autograd_history["train_loss"], rel=1e-5)


def test_ctrl_c_stops_training_and_keeps_the_model(tutorial_data, monkeypatch, capsys):
    train_epoch, calls = sf.train_epoch, []

    def interrupted_in_third_epoch(model, batches, *args):
        calls.append(1)
        if len(calls) == 3:
            train_epoch(model, batches[:50], *args)  # 50 steps, then Ctrl-C
            raise KeyboardInterrupt
        return train_epoch(model, batches, *args)
    monkeypatch.setattr(sf, "train_epoch", interrupted_in_third_epoch)
    torch.manual_seed(0)
    model = sf.SoftmaxClassifier()
    before = model.linear.weight.clone()
    history = sf.fit(model, *tutorial_data, epochs=10)
    assert len(history["train_loss"]) == len(history["val_accuracy"]) == 2
    assert "Interrupted in epoch 2: training stops here" in capsys.readouterr().out
    assert not torch.equal(model.linear.weight, before)


# --- 5. Beyond the original ---

def test_the_confusion_matrix_counts_each_pair_and_agrees_with_the_accuracy(trained_model, test_data):
    counts = sf.confusion_matrix(torch.tensor([0, 0, 0, 3, 9]), torch.tensor([0, 0, 5, 3, 1]))
    assert counts[0, 0] == 2 and counts[0, 5] == counts[3, 3] == counts[9, 1] == 1 and counts.sum() == 5
    images, labels = test_data
    predicted, accuracy, _ = sf.evaluate(trained_model, images, labels)
    counts = sf.confusion_matrix(labels, predicted)
    assert counts.sum(dim=1).tolist() == [1000] * 10  # rows: the true classes
    assert counts.diagonal().sum().item() / 100 == accuracy


# --- 7. Using the model on pictures ---

def photo_like(image, path):
    """A Fashion-MNIST image as a shop's photo: 6x larger, dark garment on white, a white margin, RGB."""
    picture = (255 - image.reshape(1, 28, 28) * 255).round().to(torch.uint8)
    picture = v2.functional.resize(picture, [168, 168], antialias=True)
    picture = v2.functional.pad(picture, [40], fill=255)
    Image.fromarray(picture[0].numpy()).convert("RGB").save(path, quality=90)
    return path


def test_photo_like_files_are_prepared_back_into_what_the_model_knows(trained_model, test_data, tmp_path):
    originals = test_data[0][:100]
    paths = [photo_like(image, tmp_path / f"{i}.{'png' if i % 2 else 'jpg'}") for i, image in enumerate(originals)]
    prepared = torch.stack([sf.prepare_picture(sf.read_picture(path)) for path in paths])
    assert prepared.shape == (100, 1, 28, 28) and 0 <= prepared.min() and prepared.max() <= 1
    assert (prepared.flatten(1) - originals).abs().mean() < 0.05  # light on black again, in place
    with torch.no_grad():
        agree = trained_model(prepared).argmax(dim=1) == trained_model(originals).argmax(dim=1)
    assert agree.sum() >= 90, f"only {agree.sum()} of 100 agree"


def test_transparent_parts_count_as_white_and_light_on_dark_stays(test_data, tmp_path):
    picture = torch.zeros(4, 60, 40, dtype=torch.uint8)  # RGBA: transparent black...
    picture[:, 10:50, 10:30] = 255                       # ...around an opaque rectangle
    picture[:3, 10:50, 10:30] = 40                       # of dark grey
    v2.functional.to_pil_image(picture).save(tmp_path / "rgba.png")
    prepared = sf.prepare_picture(sf.read_picture(tmp_path / "rgba.png"))
    assert prepared[0, 14, 14] > 0.7 and prepared[0, 0, 0] == 0  # negated: light on black
    image = test_data[0][0]
    prepared = sf.prepare_picture((image.reshape(1, 28, 28) * 255).round().to(torch.uint8))
    assert (prepared.flatten() - image).abs().mean() < 0.1  # a dataset image stays as it is


def readme_block(containing):
    """The README's ```python block that contains ``containing``."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)
    [block] = [block for block in blocks if containing in block]
    return block


def test_the_readmes_python_blocks_run_as_written(trained_model, data_dir, tmp_path, monkeypatch, capsys):
    for folder in ("outputs", "docs"):  # laid out as the repository after a default run
        (tmp_path / folder).mkdir()
    sf.save_model(trained_model, tmp_path / "outputs" / "model.pt")
    shutil.copy(REPO / "docs" / "boot.png", tmp_path / "docs")
    monkeypatch.chdir(tmp_path)
    exec(readme_block("sf.classify_picture"), {})
    assert re.fullmatch(r"Ankle boot \d+%, \S[^,]* \d+%, \S[^,]* \d+%\n", capsys.readouterr().out)
    monkeypatch.chdir(data_dir.parent)  # the repository, with data/
    threads, block, exercises = torch.get_num_threads(), readme_block("sf.fit("), {}
    try:
        exec(block, exercises)
    finally:
        torch.set_num_threads(threads)  # as the block sets one thread
    assert f"epoch 9's accuracy: {exercises['history']['val_accuracy'][9]:.1f}" in block
