"""Section 5: the test set, the confusion matrix, and a saved model that loads again."""
import torch

import softmax_fashion as sf


def test_the_confusion_matrix_agrees_with_the_accuracy(trained_model, test_data):
    images, labels = test_data
    predicted, accuracy, loss = sf.evaluate(trained_model, images, labels)
    counts = sf.confusion_matrix(labels, predicted)
    assert counts.shape == (10, 10) and counts.sum() == 10_000
    assert counts.sum(dim=1).tolist() == torch.bincount(labels, minlength=10).tolist()      # rows: true classes
    assert counts.sum(dim=0).tolist() == torch.bincount(predicted, minlength=10).tolist()   # columns: predicted
    assert 100 * counts.diagonal().sum().item() / 10_000 == accuracy
    assert 75 < accuracy < 90 and 0 < loss < 1


def test_the_confusion_matrix_counts_each_pair():
    labels, predicted = torch.tensor([0, 0, 0, 3, 9]), torch.tensor([0, 0, 5, 3, 1])
    counts = sf.confusion_matrix(labels, predicted)
    assert counts[0, 0] == 2 and counts[0, 5] == 1 and counts[3, 3] == 1 and counts[9, 1] == 1
    assert counts.sum() == 5


def test_a_class_without_test_images_has_no_accuracy_rather_than_nan():
    counts = sf.confusion_matrix(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]))
    per_class = sf.accuracy_per_class(counts)
    assert per_class[:2] == [50.0, 100.0]
    assert per_class[2:] == [None] * 8


def test_a_saved_model_loads_into_a_new_model_with_the_same_predictions(trained_model, test_data, tmp_path):
    images, _ = test_data
    path = tmp_path / "model.pt"
    sf.save_model(trained_model, path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]

    loaded = sf.load_model(path)
    assert loaded is not trained_model
    with torch.no_grad():
        assert torch.equal(loaded(images), trained_model(images))
    assert set(torch.load(path, weights_only=True)) == {"linear.weight", "linear.bias"}
