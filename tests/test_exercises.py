"""The README's exercises, solved: each test checks the number that the README states for its exercise."""
import re

import pytest
import torch
from torch import nn
from torchvision.transforms import v2

import softmax_fashion as sf
from conftest import REPO


def exercise(title):
    """The text of the README's exercise whose bold title is ``title``, on one line."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    [text] = re.findall(rf"^\d+\. \*\*{re.escape(title)}\.\*\*(.*?)(?=^\d+\. \*\*|^#)", readme, re.S | re.M)
    return " ".join(text.split())


def train_epoch(model, batches, loss_fn, optimizer):
    """Exercise 1: one epoch's training loop, written again."""
    model.train()
    total, count = 0.0, 0
    for images, labels in batches:
        optimizer.zero_grad()
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * len(labels), count + len(labels)
    return total / count


def test_1_the_loop_from_memory(tutorial_data, monkeypatch, capsys):
    monkeypatch.setattr(sf, "train_epoch", train_epoch)
    torch.manual_seed(0)
    sf.fit(sf.SoftmaxClassifier(), *tutorial_data, epochs=1)
    assert f"prints `{capsys.readouterr().out.strip()}`" in exercise("The loop, from memory")


def ten_epochs_of_adam(model, train_data):
    """Exercises 2 and 3: the loop over epochs, with Adam at its usual learning rate."""
    optimizer, loss_fn = torch.optim.Adam(model.parameters(), lr=0.001), nn.CrossEntropyLoss()
    for _ in range(10):
        train_epoch(model, sf.make_batches(*train_data), loss_fn, optimizer)
    return model


def test_2_adam(tutorial_data, trained_model):
    train_data, val_data = tutorial_data
    torch.manual_seed(0)
    _, accuracy, _ = sf.evaluate(ten_epochs_of_adam(sf.SoftmaxClassifier(), train_data), *val_data)
    _, sgd_accuracy, _ = sf.evaluate(trained_model, *val_data)  # ten epochs of SGD
    assert f"{accuracy:.1f}%, where ten epochs of SGD give {sgd_accuracy:.1f}%" in exercise("Adam")


def test_3_a_hidden_layer(tutorial_data):
    train_data, val_data = tutorial_data
    torch.manual_seed(0)
    model = ten_epochs_of_adam(nn.Sequential(nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10)), train_data)
    assert f"{sf.evaluate(model, *val_data)[1]:.1f}%" in exercise("A hidden layer")


@pytest.fixture(scope="module")
def stopped_early(tutorial_data):
    """Exercises 4 to 7: (the model after 27 epochs at lr 0.1, the validation accuracies of 30). SGD keeps no
    state between steps, and fit() takes the batches in order: 27 epochs and 3 more are one run of 30."""
    torch.manual_seed(0)
    model, stopped = sf.SoftmaxClassifier(), sf.SoftmaxClassifier()
    history = sf.fit(model, *tutorial_data, epochs=27, lr=0.1, log_every=100)
    stopped.load_state_dict(model.state_dict())
    return stopped, history["val_accuracy"] + sf.fit(model, *tutorial_data, epochs=3, lr=0.1)["val_accuracy"]


def test_4_when_to_stop(stopped_early):
    _, accuracies = stopped_early
    best = max(range(30), key=accuracies.__getitem__)
    assert f"{accuracies[best]:.1f}% in epoch {best}" in exercise("When to stop") and accuracies[-1] < accuracies[best]


def test_5_the_test_set(stopped_early, test_data):
    assert f"{sf.evaluate(stopped_early[0], *test_data)[1]:.1f}%" in exercise("The test set")


def test_6_confusions(stopped_early, test_data):
    images, labels = test_data
    predicted, _, _ = sf.evaluate(stopped_early[0], images, labels)
    shirts = sf.confusion_matrix(labels, predicted)[sf.CLASSES.index("Shirt")]
    shirts[sf.CLASSES.index("Shirt")] = 0  # the right answers
    assert f"{sf.CLASSES[shirts.argmax()]}, {shirts.max()} times" in exercise("Confusions")


def test_7_your_pictures(stopped_early, test_data, tmp_path):
    sf.save_model(stopped_early[0], tmp_path / "model.pt")
    model = sf.load_model(tmp_path / "model.pt")
    assert torch.equal(sf.evaluate(model, *test_data)[0], sf.evaluate(stopped_early[0], *test_data)[0])
    picture = v2.functional.horizontal_flip(sf.read_picture(REPO / "docs" / "boot-mirrored.png"))
    assert sf.top_classes(sf.classify_picture(model, picture)[1], k=1) in exercise("Your pictures")
