"""Time the tutorial's training loop against the script's, on the same data and seed.

Run by hand from the repository root (it is not a test, and pytest does not collect it):

    python tests/benchmark_training.py            # 200 epochs, as the tutorial
    python tests/benchmark_training.py --epochs 20

The tutorial trains through a DataLoader over a list of (image, label) pairs,
which stacks 16 tensors into a batch at every step; the script cuts its
batches from one tensor once. Both start from the same seed, so they should
end with the same weights.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import softmax_fashion as sf  # noqa: E402
from tutorial_style import script_training, tutorial_style_data, tutorial_style_training  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads for the tutorial's loop (the script's fit() always trains on 1)")
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[1] / "data")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train_pairs, val_pairs = tutorial_style_data(args.data_dir)
    images, labels = sf.load_fashion_mnist(args.data_dir, count=4000)
    tutorial_data = sf.split(images, labels, val_size=500)

    print(f"Training {args.epochs} epochs twice, seed {args.seed}, torch {torch.__version__}")
    reference, reference_accuracies, tutorial_seconds = tutorial_style_training(
        train_pairs, val_pairs, args.epochs, seed=args.seed)
    model, history, script_seconds = script_training(tutorial_data, args.epochs, seed=args.seed)

    steps = args.epochs * len(sf.make_batches(*tutorial_data[0], 16))
    difference = max((model.state_dict()[name] - tensor).abs().max().item()
                     for name, tensor in reference.state_dict().items())
    print(f"tutorial loop (DataLoader over a list): {tutorial_seconds:6.2f} s  "
          f"({tutorial_seconds / steps * 1e6:.0f} us a step)")
    print(f"script loop (batches cut from tensors): {script_seconds:6.2f} s  "
          f"({script_seconds / steps * 1e6:.0f} us a step)")
    print(f"script / tutorial time: {script_seconds / tutorial_seconds:.2f}")
    print(f"largest weight difference: {difference:.2e} "
          f"({'agree' if difference <= 1e-5 else 'DIFFER'} within 1e-5)")
    print(f"validation accuracy equal at every epoch: {history['val_accuracy'] == reference_accuracies} "
          f"(final {history['val_accuracy'][-1]:.1f} vs {reference_accuracies[-1]:.1f})")


if __name__ == "__main__":
    main()
