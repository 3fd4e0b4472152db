"""Sections 3 and 5: training, evaluation, the confusion matrix, saving and loading."""
import pytest
import torch

import softmax_fashion as sf
from tutorial_style import script_training, tutorial_style_data, tutorial_style_training


@pytest.fixture(scope="module")
def short_run(tutorial_data):
    """Three epochs with the tutorial's settings: (model, history)."""
    model, history, _ = script_training(tutorial_data, epochs=3)
    return model, history


def test_make_batches_cuts_like_a_dataloader_without_shuffle():
    images, labels = torch.arange(35 * 784.0).view(35, 784), torch.arange(35)
    batches = sf.make_batches(images, labels, batch_size=16)
    assert [len(y) for _, y in batches] == [16, 16, 3]
    assert torch.equal(torch.cat([x for x, _ in batches]), images)
    assert torch.equal(torch.cat([y for _, y in batches]), labels)


def test_a_short_run_learns(short_run):
    _, history = short_run
    losses, accuracies = history["train_loss"], history["val_accuracy"]
    assert len(losses) == len(accuracies) == 3
    assert losses[0] > losses[1] > losses[2]
    assert accuracies[-1] > 60.0


def test_same_weights_as_the_tutorials_dataloader_loop(tutorial_data, data_dir):
    train_pairs, val_pairs = tutorial_style_data(data_dir)
    reference, reference_accuracies, _ = tutorial_style_training(train_pairs, val_pairs, epochs=2)
    model, history, _ = script_training(tutorial_data, epochs=2)

    torch.manual_seed(0)
    initial = sf.SoftmaxClassifier().state_dict()
    for name, expected in reference.state_dict().items():
        assert not torch.allclose(expected, initial[name], atol=1e-3), "training did not move the weights"
        torch.testing.assert_close(model.state_dict()[name], expected, rtol=0, atol=1e-5)
    assert history["val_accuracy"] == reference_accuracies


def test_the_full_default_run_reaches_the_tutorials_accuracy(tutorial_data):
    _, history, _ = script_training(tutorial_data, epochs=200)
    assert len(history["val_accuracy"]) == 200
    assert history["val_accuracy"][0] == pytest.approx(67, abs=3)
    assert 83.0 <= history["val_accuracy"][-1] <= 85.5
    assert history["train_loss"][-1] < 0.35


def test_non_finite_loss_stops_training_at_once(tutorial_data, capsys):
    history = {"train_loss": [], "val_accuracy": []}
    (train_images, train_labels), (val_images, val_labels) = tutorial_data
    model = sf.SoftmaxClassifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e38)
    batches = sf.make_batches(train_images, train_labels, 16)
    with pytest.raises(sf.UserError, match="epoch 0.*learning rate --lr 1e\\+38 is too high"):
        sf.fit(model, batches, val_images, val_labels, torch.nn.CrossEntropyLoss(), optimizer,
               epochs=5, log_every=1, history=history)
    assert history == {"train_loss": [], "val_accuracy": []}
    assert "Epoch" not in capsys.readouterr().out


def test_confusion_matrix_agrees_with_the_accuracy(short_run, test_data):
    model, _ = short_run
    images, labels = test_data
    accuracy, loss, predicted = sf.evaluate(model, images, labels, torch.nn.CrossEntropyLoss())
    counts = sf.confusion_matrix(labels, predicted)
    assert counts.shape == (10, 10)
    assert counts.sum() == 10_000
    assert counts.sum(dim=1).tolist() == torch.bincount(labels, minlength=10).tolist()
    assert 100 * counts.diagonal().sum().item() / 10_000 == accuracy
    assert 50 < accuracy < 100 and 0 < loss < 2


def test_saved_model_loads_into_a_fresh_model_with_the_same_predictions(short_run, test_data, tmp_path):
    model, _ = short_run
    images, _ = test_data
    path = tmp_path / "model.pt"
    sf.save_atomically(path, lambda tmp: torch.save(model.state_dict(), tmp))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]

    fresh = sf.SoftmaxClassifier()
    fresh.load_state_dict(torch.load(path, weights_only=True))
    with torch.no_grad():
        assert torch.equal(fresh(images), model(images))
    assert torch.equal(fresh.predict_proba(images).argmax(dim=1), model(images).argmax(dim=1))


def test_an_interrupted_save_leaves_no_file(tmp_path):
    path = tmp_path / "metrics.json"

    def write_half_then_fail(tmp):
        tmp.write_text('{"train_loss": [1.0,')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sf.save_atomically(path, write_half_then_fail)
    assert list(tmp_path.iterdir()) == []
