"""Transfer learning for leaves, offline: a backbone of 10 PlantVillage classes against scratch.

What "Start from: built-in plantvillage-15" offers, measured on classes the backbone never saw:

1. A backbone is trained by the built-in plantvillage-15 recipe (``ClassifierConfig(
   input_size=128, filters=24, validation_fraction=0.1, seed=SEED)``, with ``--epochs`` and
   ``--patience`` instead of the recipe's 160 and 40) on 10 of the 15 classes.  The 5 classes
   left out are a seeded draw (``--seed``), redrawn until they span more than one plant.
2. For each of the 5 unseen classes, 10 photos are drawn (seeded) to train on and the other
   50 are the test set (250 photos).  Of the 10, the engine holds 1 out for validation (the
   recipe's 10 %), which picks the epoch whose weights are kept.
3. The same small CNN learns the 5 classes from those 50 photos twice, with the same budget
   (the same number of epochs of the same batches, no early stopping):
   - transfer: ``initial=`` the 10-class backbone: its network is kept, a new top trains for
     ``--head-epochs`` with the network frozen, then everything for ``--tune-epochs`` at a
     tenth of the learning rate;
   - scratch: random weights, ``head + tune`` epochs at the recipe's learning rate.
   Steps 2-3 are repeated for ``--draws`` seeded draws of the 10 photos (seed, seed + 1, ...).

Prints a readable table; the last line is one JSON object of the figures.  The seconds are
wall-clock seconds of each whole training call (graph tracing included) on this machine.

Usage: python benchmarks/leaf_transfer.py [--data DIR] [--epochs N] [--patience N]
       [--head-epochs N] [--tune-epochs N] [--draws K] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DLBIO_DATA", REPO.parent / "shared" / "data"))
NEW_CLASSES = 5
TRAIN_PHOTOS_PER_CLASS = 10
# The built-in plantvillage-15 recipe (scripts/train_builtin_models.py), epochs aside.
RECIPE = {"input_size": 128, "filters": 24, "validation_fraction": 0.1}


def plant(class_name: str) -> str:
    """The plant of a PlantVillage class: the name's first word (Pepper, Potato, Tomato)."""
    return class_name.split("_")[0]


def split_classes(names: tuple[str, ...], seed: int) -> tuple[list[str], list[str]]:
    """A seeded draw of the classes left out of the backbone, spanning more than one plant."""
    if len({plant(name) for name in names}) < 2:
        raise SystemExit("The classes are all of one plant; nothing to spread the draw over.")
    rng = np.random.default_rng(seed)
    while True:
        new = sorted(rng.choice(names, NEW_CLASSES, replace=False).tolist())
        if len({plant(name) for name in new}) > 1:
            return [name for name in names if name not in new], new


def few_photos(
    indices_by_class: list[np.ndarray], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded training photos per class and the rest as test photos, with their labels."""
    rng = np.random.default_rng(seed)
    train, train_labels, test, test_labels = [], [], [], []
    for label, indices in enumerate(indices_by_class):
        order = rng.permutation(indices)
        train.append(order[:TRAIN_PHOTOS_PER_CLASS])
        test.append(order[TRAIN_PHOTOS_PER_CLASS:])
        train_labels.append(np.full(TRAIN_PHOTOS_PER_CLASS, label))
        test_labels.append(np.full(indices.size - TRAIN_PHOTOS_PER_CLASS, label))
    return tuple(np.concatenate(parts) for parts in (train, train_labels, test, test_labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared/data folder")
    parser.add_argument("--epochs", type=int, default=60, help="backbone epochs at most")
    parser.add_argument("--patience", type=int, default=15, help="backbone early stopping")
    parser.add_argument("--head-epochs", type=int, default=30, help="transfer: frozen epochs")
    parser.add_argument("--tune-epochs", type=int, default=30, help="transfer: unfrozen epochs")
    parser.add_argument("--draws", type=int, default=3, help="draws of the training photos")
    parser.add_argument("--seed", type=int, default=0, help="seed of every draw and network")
    args = parser.parse_args()

    from napari_dlbio.core.class_dataset import load_class_folder
    from napari_dlbio.core.classifier_config import ClassifierConfig
    from napari_dlbio.core.events import EpochEnded, run_to_end
    from napari_dlbio.models.classification import (
        evaluate_classifier,
        iter_train_classifier,
        train_classifier,
    )

    data = load_class_folder(args.data / "plantvillage", RECIPE["input_size"])
    backbone_classes, new_classes = split_classes(data.class_names, args.seed)
    index_of = {name: i for i, name in enumerate(data.class_names)}
    print(f"Backbone classes ({len(backbone_classes)}): {', '.join(backbone_classes)}")
    print(f"New classes ({len(new_classes)}): {', '.join(new_classes)}", flush=True)

    def show(event: object) -> None:
        if isinstance(event, EpochEnded):
            figures = {key: round(value, 3) for key, value in event.metrics.items()}
            print(f"  epoch {event.epoch:>3}  loss {event.loss:.3f}  {figures}", flush=True)

    keep = np.isin(data.class_indices, [index_of[name] for name in backbone_classes])
    remap = {index_of[name]: i for i, name in enumerate(backbone_classes)}
    backbone_config = ClassifierConfig(
        class_names=tuple(backbone_classes),
        epochs=args.epochs,
        early_stopping_patience=args.patience,
        seed=args.seed,
        **RECIPE,
    )
    started = time.perf_counter()
    backbone = run_to_end(
        iter_train_classifier(
            data.images[keep],
            np.array([remap[i] for i in data.class_indices[keep]]),
            backbone_config,
        ),
        show,
    ).model
    backbone_seconds = time.perf_counter() - started

    by_class = [np.flatnonzero(data.class_indices == index_of[name]) for name in new_classes]
    few_shot = ClassifierConfig(
        class_names=tuple(new_classes),
        epochs=args.head_epochs,
        fine_tune_epochs=args.tune_epochs,
        early_stopping_patience=None,
        seed=args.seed,
        **RECIPE,
    )
    scratch_config = few_shot.replace(epochs=args.head_epochs + args.tune_epochs)
    rows = []
    for draw in range(args.draws):
        train, train_labels, test, test_labels = few_photos(by_class, args.seed + draw)
        row = {"draw": draw, "photo_seed": args.seed + draw}
        for name, config, initial in (
            ("transfer", few_shot, backbone),
            ("scratch", scratch_config, None),
        ):
            started = time.perf_counter()
            model = train_classifier(
                data.images[train], train_labels, config, initial=initial
            ).model
            row[f"{name}_seconds"] = round(time.perf_counter() - started, 1)
            report = evaluate_classifier(model, data.images[test], test_labels)
            row[f"{name}_accuracy"] = round(report["accuracy"], 4)
            print(f"  draw {draw} {name}: accuracy {report['accuracy']:.3f}", flush=True)
        rows.append(row)

    figures = {
        "transfer_accuracy": round(float(np.mean([r["transfer_accuracy"] for r in rows])), 4),
        "scratch_accuracy": round(float(np.mean([r["scratch_accuracy"] for r in rows])), 4),
        "transfer_seconds": round(float(np.mean([r["transfer_seconds"] for r in rows])), 1),
        "scratch_seconds": round(float(np.mean([r["scratch_seconds"] for r in rows])), 1),
        "draws": rows,
        "train_photos_per_class": TRAIN_PHOTOS_PER_CLASS,
        "test_photos": int(test.size),
        "backbone_classes": backbone_classes,
        "new_classes": new_classes,
        "epochs": args.head_epochs + args.tune_epochs,
        "transfer_epochs": {"head": args.head_epochs, "fine_tune": args.tune_epochs},
        "validation_photos": model.metrics["validation_images"],
        "backbone_val_accuracy": backbone.metrics.get("val_accuracy"),
        "backbone_epochs_run": backbone.metrics["epochs_run"],
        "backbone_best_epoch": backbone.metrics["best_epoch"],
        "backbone_seconds": round(backbone_seconds, 1),
        "input_size": RECIPE["input_size"],
        "seed": args.seed,
    }
    print()
    print(
        f"{'draw':>4} {'transfer acc':>13} {'scratch acc':>12} {'transfer s':>11} {'scratch s':>10}"
    )
    for row in rows:
        print(
            f"{row['draw']:>4} {row['transfer_accuracy']:>13.3f} {row['scratch_accuracy']:>12.3f}"
            f" {row['transfer_seconds']:>11.1f} {row['scratch_seconds']:>10.1f}"
        )
    print(
        f"{'mean':>4} {figures['transfer_accuracy']:>13.3f} {figures['scratch_accuracy']:>12.3f}"
        f" {figures['transfer_seconds']:>11.1f} {figures['scratch_seconds']:>10.1f}"
    )
    print()
    for key, value in figures.items():
        if key != "draws":
            print(f"{key:<24} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
