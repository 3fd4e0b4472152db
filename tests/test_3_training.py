"""Section 3: batches, shuffling, the training loop, and its faithfulness to the original tutorial."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import softmax_fashion as sf
from tutorial_style import script_training, tutorial_style_data, tutorial_style_training


@pytest.fixture(scope="module")
def short_run(tutorial_data):
    """Three epochs with the tutorial's settings: (model, history)."""
    model, history, _ = script_training(tutorial_data, epochs=3)
    return model, history


def small_dataset(n=35):
    return torch.arange(n * 784.0).view(n, 784), torch.arange(n)


def test_batches_are_cut_as_a_dataloader_without_shuffle_cuts_them():
    images, labels = small_dataset()
    batches = sf.make_batches(images, labels, batch_size=16)
    expected = list(DataLoader(TensorDataset(images, labels), batch_size=16))
    assert [len(y) for _, y in batches] == [16, 16, 3]
    for (x, y), (expected_x, expected_y) in zip(batches, expected, strict=True):
        assert torch.equal(x, expected_x) and torch.equal(y, expected_y)


def test_shuffling_is_reproducible_new_every_epoch_and_keeps_the_same_images():
    images, labels = small_dataset()
    def epochs(seed, n=3):
        generator = torch.Generator().manual_seed(seed)
        return [torch.cat([y for _, y in sf.make_batches(images, labels, 16, generator)]) for _ in range(n)]
    first, again, other = epochs(0), epochs(0), epochs(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))        # the same seed, the same orders
    assert not torch.equal(first[0], first[1])                         # a new order every epoch
    assert not torch.equal(first[0], other[0])                         # another seed, another order
    assert not torch.equal(first[0], labels)                           # not the dataset order
    assert all(torch.equal(order.sort().values, labels) for order in first)  # each epoch: every image once


def test_fit_returns_the_history_of_every_epoch(short_run):
    _, history = short_run
    assert set(history) == {"train_loss", "val_accuracy"}
    losses, accuracies = history["train_loss"], history["val_accuracy"]
    assert len(losses) == len(accuracies) == 3
    assert losses[0] > losses[1] > losses[2]  # a short run learns
    assert 60.0 < accuracies[-1] <= 100


def test_fit_prints_epochs_numbered_from_0_as_the_tutorial_does(tutorial_data, capsys):
    torch.manual_seed(0)
    sf.fit(sf.SoftmaxClassifier(), *tutorial_data, epochs=12, log_every=5)
    printed = [line.split(".")[0] for line in capsys.readouterr().out.splitlines()]
    assert printed == ["Epoch: 0", "Epoch: 5", "Epoch: 10", "Epoch: 11"]  # every 5th, and the last


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


def test_shuffling_trains_reproducibly_to_other_weights(tutorial_data, short_run):
    in_order, _ = short_run
    shuffled, history, _ = script_training(tutorial_data, epochs=3, shuffle_seed=0)
    again, history_again, _ = script_training(tutorial_data, epochs=3, shuffle_seed=0)
    assert torch.equal(shuffled.linear.weight, again.linear.weight) and history == history_again
    assert not torch.allclose(shuffled.linear.weight, in_order.linear.weight, atol=1e-4)
    assert history["val_accuracy"][-1] > 60


def test_the_full_default_run_reaches_the_tutorials_accuracy(tutorial_data):
    _, history, _ = script_training(tutorial_data, epochs=200)
    assert len(history["val_accuracy"]) == 200
    assert history["val_accuracy"][0] == pytest.approx(67, abs=3)  # the tutorial: 67.2 after epoch 0
    assert 83.0 <= history["val_accuracy"][-1] <= 85.5             # the tutorial: about 84
    assert history["train_loss"][-1] < 0.35


def test_training_runs_on_one_cpu_thread_and_gives_the_threads_back(tutorial_data):
    torch.set_num_threads(2)
    threads_seen = []
    def should_stop():
        threads_seen.append(torch.get_num_threads())
        return False
    sf.fit(sf.SoftmaxClassifier(), *tutorial_data, epochs=1, should_stop=should_stop)
    assert len(threads_seen) >= 219 and set(threads_seen) == {1}  # asked after each of the 219 steps
    assert torch.get_num_threads() == 2


def test_a_stop_request_ends_training_after_the_current_step(tutorial_data, capsys):
    steps = []
    def stop_after_40_steps():
        steps.append(1)
        return len(steps) >= 40
    torch.manual_seed(0)
    model = sf.SoftmaxClassifier()
    history = sf.fit(model, *tutorial_data, epochs=5, log_every=100, should_stop=stop_after_40_steps)
    assert len(steps) == 41  # 40 steps, and the question once more after the epoch's validation
    assert len(history["train_loss"]) == len(history["val_accuracy"]) == 1  # the short epoch counts
    # The history describes the model as it is: its validation accuracy is the model's now.
    _, (val_images, val_labels) = tutorial_data
    _, accuracy, _ = sf.evaluate(model, val_images, val_labels)
    assert accuracy == history["val_accuracy"][-1]
    assert capsys.readouterr().out.startswith("Epoch: 0.")  # the last epoch is always printed


def test_non_finite_loss_stops_training_at_once(tutorial_data, capsys):
    with pytest.raises(sf.UserError, match="epoch 0.*learning rate --lr 1e\\+38 is too high"):
        sf.fit(sf.SoftmaxClassifier(), *tutorial_data, epochs=5, lr=1e38, log_every=1)
    assert "Epoch" not in capsys.readouterr().out
