"""Sections 1 to 7: what the tutorial teaches, checked on the real data."""
import runpy
import signal
import sys

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
from torchvision.transforms import v2

import softmax_fashion as sf
from conftest import REPO, history, train


@pytest.mark.parametrize("shape", [(5, 784), (5, 28, 28), (5, 1, 28, 28)])
def test_the_model_gives_ten_logits_and_ten_probabilities_per_image(shape):
    model = sf.SoftmaxClassifier()
    assert {name: tuple(t.shape) for name, t in model.state_dict().items()} == {
        "linear.weight": (10, 784), "linear.bias": (10,)}
    images = torch.rand(shape)
    probabilities = model.predict_proba(images)
    assert model(images).shape == probabilities.shape == (5, 10) and not probabilities.requires_grad
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
def test_by_hand_equals_pytorch_and_prints_the_numbers(scale, trained_model, tutorial_data, capsys):
    model = sf.SoftmaxClassifier()
    model.load_state_dict({name: tensor * scale for name, tensor in trained_model.state_dict().items()})
    _, (images, labels) = tutorial_data
    for i in range(3):  # assert_close inside raises where a number differs from PyTorch's
        sf.follow_one_image(model, images[i], labels[i])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 15 and lines[10].startswith("One validation image, a ")
    logits = model(images[2:3])[0]
    assert [float(x) for x in lines[-4].split()[2:]] == pytest.approx(logits.tolist(), abs=0.006)
    assert [float(x) for x in lines[-3].split()[2:]] == pytest.approx(torch.softmax(logits, 0).tolist(), abs=0.006)


def original_program(data_dir, epochs):
    """The original's program, seeded with 0: a DataLoader over a list of (ToTensor image, label) pairs."""
    dataset = datasets.FashionMNIST(data_dir, train=True, transform=transforms.ToTensor())
    pairs = [dataset[i] for i in range(4000)]
    torch.manual_seed(0)
    model = sf.SoftmaxClassifier()
    optimizer, criterion, accuracies = torch.optim.SGD(model.parameters(), lr=0.01), torch.nn.CrossEntropyLoss(), []
    for _ in range(epochs):
        for images, labels in DataLoader(pairs[:3500], batch_size=16):
            optimizer.zero_grad()
            loss = criterion(model(images.view(-1, 28 * 28)), labels)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            correct = sum((model(x.view(-1, 784)).argmax(1) == y).sum().item() for x, y in DataLoader(pairs[3500:]))
        accuracies.append(100 * correct / 500)
    return model, accuracies


def test_the_data_and_a_short_training_end_with_the_weights_of_the_original_program(tutorial_data, data_dir, capsys):
    assert [f"{name}.gz" for name in sf.RAW_FILES] == [name for name, _ in datasets.FashionMNIST.resources]
    assert list(sf.CLASSES) == datasets.FashionMNIST.classes
    (images, labels), (val_images, _) = tutorial_data
    assert images.shape == (3500, 784) and labels.shape == (3500,) and val_images.shape == (500, 784)
    reference, reference_accuracies = original_program(data_dir, epochs=2)  # the same data, batches and steps
    torch.manual_seed(0)
    start = sf.SoftmaxClassifier().state_dict()  # the weights that train() starts from
    model, history = train(tutorial_data, 2, log_every=2)
    for name, expected in reference.state_dict().items():
        assert not torch.allclose(expected, start[name], atol=1e-3), "training did not move the weights"
        torch.testing.assert_close(model.state_dict()[name], expected, rtol=0, atol=1e-5)
    assert history["val_accuracy"] == reference_accuracies and history["val_accuracy"][0] == pytest.approx(67, abs=3)
    assert history["train_loss"][0] > history["train_loss"][1] and history["val_loss"][0] > history["val_loss"][1]
    assert [line.split(".")[0] for line in capsys.readouterr().out.splitlines()] == ["Epoch: 0", "Epoch: 1"]


def test_training_by_hand_ends_with_the_weights_of_autograd(tutorial_data):
    (by_hand, by_hand_history), (autograd, autograd_history) = (train(tutorial_data, 2, fit=fit)
                                                                for fit in (sf.fit_by_hand, sf.fit))
    for name, expected in autograd.state_dict().items():
        torch.testing.assert_close(by_hand.state_dict()[name], expected, rtol=0, atol=1e-5)
    assert by_hand_history["val_accuracy"] == autograd_history["val_accuracy"]
    assert by_hand_history["train_loss"] == pytest.approx(autograd_history["train_loss"], rel=1e-5)


def test_ctrl_c_stops_fit_and_the_model_keeps_what_it_learned(tutorial_data, monkeypatch):
    evaluate, calls = sf.evaluate, []

    def ctrl_c_in_third_epoch(*args):  # as the terminal sends it: a real SIGINT, to this process
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGINT)
        return evaluate(*args)
    monkeypatch.setattr(sf, "evaluate", ctrl_c_in_third_epoch)
    model, filled, start = sf.SoftmaxClassifier(), history(), sf.SoftmaxClassifier().state_dict()
    model.load_state_dict(start)
    with pytest.raises(KeyboardInterrupt):  # in a notebook, sf.fit stops, and so does a loop of calls
        sf.fit(model, sf.make_batches(*tutorial_data[0]), tutorial_data[1], torch.nn.CrossEntropyLoss(),
               torch.optim.SGD(model.parameters(), lr=0.01), 10, filled)
    assert len(filled["train_loss"]) == 2 and not torch.equal(model.linear.weight, start["linear.weight"])


def test_the_confusion_matrix_counts_each_pair_and_agrees_with_the_accuracy(trained_model, test_data):
    counts = sf.confusion_matrix(torch.tensor([0, 0, 0, 3, 9]), torch.tensor([0, 0, 5, 3, 1]))
    assert counts[0, 0] == 2 and counts[0, 5] == counts[3, 3] == counts[9, 1] == 1 and counts.sum() == 5
    predicted, accuracy, _ = sf.evaluate(trained_model, *test_data)
    counts = sf.confusion_matrix(test_data[1], predicted)
    assert counts.sum(dim=1).tolist() == [1000] * 10  # rows: the true classes
    assert counts.diagonal().sum().item() / 100 == accuracy


def test_a_saved_state_dict_loads_into_a_new_model_that_predicts_the_same(trained_model, test_data, tmp_path):
    torch.save(trained_model.state_dict(), tmp_path / "model.pt")
    loaded = sf.load_model(tmp_path / "model.pt")
    assert loaded is not trained_model and torch.equal(sf.evaluate(loaded, *test_data)[0],
                                                       sf.evaluate(trained_model, *test_data)[0])


def photo_like(image, path):
    """A Fashion-MNIST image as a shop's photo: 6 times larger, dark garment on white, a white margin, RGB."""
    picture = v2.functional.resize((255 - image.reshape(1, 28, 28) * 255).round().to(torch.uint8), [168, 168])
    Image.fromarray(v2.functional.pad(picture, [40], fill=255)[0].numpy()).convert("RGB").save(path, quality=90)
    return path


def test_photo_like_files_are_prepared_back_into_what_the_model_knows(trained_model, test_data, tmp_path):
    originals = test_data[0][:40]
    paths = [photo_like(image, tmp_path / f"{i}.{'png' if i % 2 else 'jpg'}") for i, image in enumerate(originals)]
    prepared = torch.stack([sf.prepare_picture(sf.read_picture(path)) for path in paths])
    assert prepared.shape == (40, 1, 28, 28) and 0 <= prepared.min() and prepared.max() <= 1
    assert (prepared.flatten(1) - originals).abs().mean() < 0.05  # light on black again, in place
    agree = trained_model(prepared).argmax(dim=1) == trained_model(originals).argmax(dim=1)
    assert agree.sum() >= 36, f"only {agree.sum()} of 40 agree"
    image = test_data[0][0]  # and a dataset image stays as it is
    prepared = sf.prepare_picture((image.reshape(1, 28, 28) * 255).round().to(torch.uint8))
    assert (prepared.flatten() - image).abs().mean() < 0.1


def test_importing_runs_nothing_and_percent_run_runs_the_program(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(REPO / "softmax_fashion.py"), run_name="softmax_fashion")  # as `import softmax_fashion`
    monkeypatch.setitem(sys.modules, "ipykernel", sys)  # in a Jupyter kernel, as `%run softmax_fashion.py --help`
    monkeypatch.setattr(sys, "argv", [str(REPO / "softmax_fashion.py"), "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(REPO / "softmax_fashion.py"), run_name="__main__")
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("usage: softmax_fashion.py")
    assert list(tmp_path.iterdir()) == []
