"""Train the built-in models from ``../shared/data``, reproducibly, and write their cards.

For every model the same recipe (settings and seed below) runs twice with ``dlbio train``:

1. **held out**: ISBI 2012 slices 0-24 train and slices 25-29 are scored with
   ``dlbio evaluate`` (leaves: 80 % of each class train, the other 20 % are scored);
2. **final**: all data train; the model folder goes to
   ``src/napari_dlbio/builtin_models/NAME`` with its card (``README.md``) and its files'
   SHA-256 in the package's record (``builtin_models/registry.json``).

Training runs for a fixed number of steps (no time budget, no early stopping on the
segmentation models), so the result does not depend on the machine's speed.

Usage::

    python scripts/train_builtin_models.py [--only NAME ...] [--data DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DLBIO_DATA", REPO.parent / "shared" / "data"))
PACKAGE_MODELS = REPO / "src" / "napari_dlbio" / "builtin_models"
HELD_OUT_SLICES = slice(25, 30)
TRAIN_SLICES = slice(0, 25)
HELD_OUT_FRACTION = 0.2
SEED = 0
_CLI = "import sys; from napari_dlbio.cli import main; sys.exit(main())"

ISBI_CITATION = (
    "Arganda-Carreras I, Turaga SC, Berger DR, et al. (2015) Crowdsourcing the creation of "
    "image segmentation algorithms for connectomics. Front. Neuroanat. 9:142. "
    "doi:10.3389/fnana.2015.00142; Cardona A, Saalfeld S, Preibisch S, et al. (2010) An "
    "integrated micro- and macroarchitectural analysis of the Drosophila brain by "
    "computer-assisted serial section electron microscopy. PLoS Biol 8(10): e1000502. "
    "doi:10.1371/journal.pbio.1000502"
)
ISBI_TERMS = (
    "The data's terms (as distributed with the Cardona et al. stack): free to use for "
    "generating or testing non-commercial image segmentation software; publications that "
    "derive from it must cite TrakEM2 and Cardona et al. 2010. The model inherits these "
    "terms: non-commercial use, with citation."
)
PLANTVILLAGE_CITATION = (
    "Hughes DP, Salathé M (2015) An open access repository of images on plant health to "
    "enable the development of mobile disease diagnostics. arXiv:1511.08060; Mohanty SP, "
    "Hughes DP, Salathé M (2016) Using deep learning for image-based plant disease "
    "detection. Front. Plant Sci. 7:1419. doi:10.3389/fpls.2016.01419"
)
PLANTVILLAGE_TERMS = (
    "The PlantVillage photos (60 per class, from spMohanty/PlantVillage-Dataset) are "
    "licensed CC BY-SA 3.0: attribution and share-alike apply, and this model, trained "
    "on them, is shared under the same licence with the citations above."
)

# The U-Net of the EM models: the default architecture (16 filters, 2 x 2 stem; 7.8 MB of
# float32 weights, fast enough to fine-tune in seconds on a CPU), trained 3000 steps with
# scale augmentation so that specimens imaged at another pixel size still segment.
EM_TRAINING = {
    "augment_scale": 0.25,
    "epochs": 60,
    "steps_per_epoch": 50,
    "validation_fraction": 0.0,
    "early_stopping_patience": None,
    "seed": SEED,
}
# The leaf classifier: the small CNN at 128 pixels with 24 filters; predictions average the
# 8 flips and quarter turns of each photo (held-out accuracy 0.844 -> 0.894).
LEAF_TRAINING = {
    "input_size": 128,
    "filters": 24,
    "epochs": 160,
    "early_stopping_patience": 40,
    "validation_fraction": 0.1,
    "test_time_augmentation": True,
    "seed": SEED,
}


@dataclass
class Recipe:
    """How one built-in model is trained and described."""

    name: str
    task: str  # "segment" or "classify"
    summary: str
    intended_use: str
    limits: str
    citation: str
    terms: str
    config: dict[str, Any]
    label_values: str = ""
    held_out_text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


RECIPES = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            name="em-membranes",
            task="segment",
            summary="Cell membranes in serial-section TEM of nervous tissue (ISBI 2012).",
            intended_use=(
                "A first membrane mask of serial-section or transmission EM images of tissue "
                "(grey, membranes dark), to correct and fine-tune in Correct & fine-tune."
            ),
            limits=(
                "Trained on 30 sections of one specimen (Drosophila larva ventral nerve cord, "
                "about 4 x 4 nm pixels): other tissues, stains or pixel sizes far from 4 nm "
                "lose accuracy; fine-tune on a few corrected strokes of your own data. Most "
                "remaining errors are one pixel at membrane edges and membrane gaps that "
                "merge neighbouring cells."
            ),
            citation=ISBI_CITATION,
            terms=ISBI_TERMS,
            config={
                "class_names": ["background", "membrane"],
                "boundary_classes": ["membrane"],
                **EM_TRAINING,
            },
            label_values="255=background,0=membrane",
            held_out_text="ISBI 2012 training slices 0-24 trained, slices 25-29 scored",
        ),
        Recipe(
            name="em-membranes-mitochondria",
            task="segment",
            summary="Membranes and mitochondria in serial-section TEM (ISBI 2012 sections).",
            intended_use=(
                "Membranes and mitochondria of serial-section or transmission EM images of "
                "tissue, as a starting point to correct and fine-tune."
            ),
            limits=(
                "Trained on 30 sections of one specimen (Drosophila larva ventral nerve cord); "
                "mitochondria cover 5 % of those pixels, so small or pale mitochondria are "
                "missed more often than membranes. Synapses and other organelles are "
                "background. Fine-tune on your own data for other tissues or pixel sizes."
            ),
            citation=ISBI_CITATION,
            terms=ISBI_TERMS,
            config={
                "class_names": ["background", "membrane", "mitochondrion"],
                "boundary_classes": ["membrane"],
                **EM_TRAINING,
            },
            label_values="0=background,1=membrane,2=mitochondrion",
            held_out_text="ISBI 2012 training slices 0-24 trained, slices 25-29 scored",
        ),
        Recipe(
            name="plantvillage-15",
            task="classify",
            summary="Disease of pepper, potato and tomato leaves: 15 PlantVillage classes.",
            intended_use=(
                "Disease class of one detached leaf photographed on a plain background, as in "
                "PlantVillage; or the backbone to train a classifier of your own leaf classes "
                '("Start from: built-in plantvillage-15").'
            ),
            limits=(
                "Trained on 60 photos per class of one lab's set-up (leaf centred on a grey "
                "or plain background): photos from the field, several leaves or other plants "
                "are outside what it has seen, and its probabilities are then not to be "
                "trusted. Classes outside these 15 are forced into one of them. As a "
                "starting point for other leaf classes, a backbone of this recipe did not beat "
                "the same network trained from scratch (benchmarks/leaf_transfer.py: 0.62 "
                "against 0.71 with 10 photos per new class). Its class maps (Guided Grad-CAM) "
                "put 1.62 times the leaf's area share of their mass on the leaf, only a little "
                "more than a centred blob (1.58); about a third of their mass lies off the leaf."
            ),
            citation=PLANTVILLAGE_CITATION,
            terms=PLANTVILLAGE_TERMS,
            config=dict(LEAF_TRAINING),
            held_out_text=(
                f"{HELD_OUT_FRACTION:.0%} of each class held out (seed {SEED}), the rest trained"
            ),
        ),
    )
}


def dlbio(*args: str) -> str:
    """Run the CLI in a child process; return its standard output."""
    command = [sys.executable, "-c", _CLI, *args]
    print("$ dlbio " + " ".join(args), flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"dlbio {args[0]} failed with exit code {done.returncode}")
    return done.stdout


def em_labels(recipe: Recipe, data: Path) -> np.ndarray:
    """The label stack the recipe's ``label_values`` read."""
    if recipe.name == "em-membranes":
        return tifffile.imread(data / "isbi2012" / "train-labels.tif")
    membranes = tifffile.imread(data / "isbi2012_structures" / "membranes.tif") == 255
    mitochondria = tifffile.imread(data / "isbi2012_structures" / "mitochondria.tif") == 255
    labels = np.where(membranes, 1, 0).astype(np.uint8)
    labels[mitochondria] = 2
    return labels


def em_inputs(recipe: Recipe, data: Path, work: Path) -> dict[str, Path]:
    """Write the image and label stacks of both runs; return their paths."""
    images = tifffile.imread(data / "isbi2012" / "train-volume.tif")
    labels = em_labels(recipe, data)
    paths = {}
    for part, selection in (
        ("all", slice(None)),
        ("train", TRAIN_SLICES),
        ("held_out", HELD_OUT_SLICES),
    ):
        for kind, stack in (("images", images), ("labels", labels)):
            path = work / f"{part}-{kind}.tif"
            tifffile.imwrite(path, stack[selection], compression="zlib")
            paths[f"{part}_{kind}"] = path
    return paths


def leaf_inputs(data: Path, work: Path) -> dict[str, Path]:
    """Copy the photos into a training and a held-out class folder (a seeded 20 % split)."""
    rng = np.random.default_rng(SEED)
    paths = {"all_images": data / "plantvillage"}
    for part in ("train", "held_out"):
        paths[f"{part}_images"] = work / part
    for class_folder in sorted(p for p in (data / "plantvillage").iterdir() if p.is_dir()):
        photos = sorted(class_folder.iterdir())
        held = set(rng.choice(len(photos), round(HELD_OUT_FRACTION * len(photos)), replace=False))
        for index, photo in enumerate(photos):
            part = "held_out" if index in held else "train"
            target = paths[f"{part}_images"] / class_folder.name / photo.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photo, target)
    return paths


def train(recipe: Recipe, images: Path, labels: Path | None, out: Path, work: Path) -> float:
    """Train the recipe on the given data into ``out``; return the wall seconds."""
    config_file = work / "config.json"
    config_file.write_text(json.dumps(recipe.config, indent=2))
    args = ["train", "--task", recipe.task, "--images", str(images), "--out", str(out)]
    if labels is not None:
        args += ["--labels", str(labels), "--label-values", recipe.label_values]
    started = time.perf_counter()
    dlbio(*args, "--config", str(config_file), "--quiet")
    return time.perf_counter() - started


def evaluate(recipe: Recipe, model: Path, images: Path, labels: Path | None) -> dict[str, Any]:
    """``dlbio evaluate --json`` of the model on held-out data."""
    args = ["evaluate", "--model", str(model), "--images", str(images), "--json", "--quiet"]
    if labels is not None:
        args += ["--labels", str(labels), "--label-values", recipe.label_values]
    return json.loads(dlbio(*args).strip().splitlines()[-1])


def run_recipe(recipe: Recipe, data: Path, work: Path) -> dict[str, Any]:
    """Held-out run, then the final run; return the figures for the card."""
    work.mkdir(parents=True, exist_ok=True)
    segment = recipe.task == "segment"
    inputs = em_inputs(recipe, data, work) if segment else leaf_inputs(data, work)
    labels = {part: inputs.get(f"{part}_labels") for part in ("all", "train", "held_out")}
    held_out_model = work / "held-out-model"
    shutil.rmtree(held_out_model, ignore_errors=True)
    held_out_seconds = train(recipe, inputs["train_images"], labels["train"], held_out_model, work)
    report = evaluate(recipe, held_out_model, inputs["held_out_images"], labels["held_out"])
    final_model = work / "final-model"
    shutil.rmtree(final_model, ignore_errors=True)
    final_seconds = train(recipe, inputs["all_images"], labels["all"], final_model, work)
    figures = {
        "held_out": report,
        "held_out_training_seconds": round(held_out_seconds),
        "final_training_seconds": round(final_seconds),
    }
    (work / "figures.json").write_text(json.dumps(figures, indent=2))
    install(recipe, final_model, figures)
    return figures


def reevaluate(recipe: Recipe, data: Path, work: Path) -> dict[str, Any]:
    """The last run's figures, its held-out model scored again by today's ``dlbio evaluate``.

    Settings the recipe gained since that run that do not change training (such as which
    classes are boundaries) are added to both trained folders first.
    """
    figures = json.loads((work / "figures.json").read_text())
    for model in (work / "held-out-model", work / "final-model"):
        _add_new_settings(recipe, model)
    inputs = em_inputs(recipe, data, work) if recipe.task == "segment" else leaf_inputs(data, work)
    held_out = evaluate(
        recipe, work / "held-out-model", inputs["held_out_images"], inputs.get("held_out_labels")
    )
    figures["held_out"] = held_out
    (work / "figures.json").write_text(json.dumps(figures, indent=2))
    return figures


def _add_new_settings(recipe: Recipe, model: Path) -> None:
    """Write the recipe's settings that ``model``'s config.json lacks into it."""
    config_file = model / "config.json"
    folder = json.loads(config_file.read_text())
    missing = {key: value for key, value in recipe.config.items() if key not in folder["config"]}
    if missing:
        folder["config"].update(missing)
        config_file.write_text(json.dumps(folder, indent=2, sort_keys=True))


def install(recipe: Recipe, model: Path, figures: dict[str, Any], *, network: bool = True) -> None:
    """Copy the final model folder into the package, write its card, record its hashes.

    The held-out report goes into the model's ``metrics.json`` (key ``held_out``), so the
    shipped folder carries the figures its card quotes; the Keras file loses the
    optimizer's state, which no user of a built-in model needs (fine-tuning starts anew).
    With ``network=False`` the package keeps its Keras file (re-saving it would change its
    bytes, not its weights) and only the descriptions are copied.
    """
    from napari_dlbio.core.builtin_models import record_model

    target = PACKAGE_MODELS / recipe.name
    keep = shutil.ignore_patterns(".*", *([] if network else ["*.keras"]))
    if network:
        shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(model, target, ignore=keep, dirs_exist_ok=True)
    if network:
        _drop_optimizer_state(target / "model.keras")
    metrics_file = target / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["held_out"] = figures["held_out"]
    metrics_file.write_text(json.dumps(metrics, indent=2))
    (target / "README.md").write_text(card(recipe, figures))
    record_model(PACKAGE_MODELS, recipe.name, recipe.summary)


def _drop_optimizer_state(model_file: Path) -> None:
    """Re-save the network without Adam's moments: a third of the size, same predictions."""
    from napari_dlbio.models.store import load_model_folder

    network = load_model_folder(model_file.parent).model  # loaded uncompiled
    slim = model_file.with_name("slim.keras")
    network.save(slim)
    slim.replace(model_file)


def held_out_table(report: dict[str, Any]) -> list[str]:
    """The held-out report as Markdown table rows."""
    if "pixel_accuracy" in report:
        rows = ["| class | IoU | Dice |", "|---|---|---|"]
        rows += [
            f"| {name} | {values['iou']:.3f} | {values['dice']:.3f} |"
            for name, values in report["classes"].items()
        ]
        return [
            *rows,
            "",
            f"Pixel accuracy {report['pixel_accuracy']:.3f}.",
            *object_table(report.get("objects", {})),
        ]
    rows = ["| class | precision | recall | photos |", "|---|---|---|---|"]
    rows += [
        f"| {name} | {_share(values['precision'])} | {_share(values['recall'])} "
        f"| {values['support']} |"
        for name, values in report["classes"].items()
    ]
    return [*rows, "", f"Accuracy {report['accuracy']:.3f}."]


def object_table(objects: dict[str, Any]) -> list[str]:
    """Object scores (``dlbio evaluate``'s ``objects``) as Markdown table rows."""
    if not objects:
        return []
    rows = [
        "",
        "Objects with the default object settings (`dlbio predict --instances`), against "
        "the regions of the ground truth:",
        "",
        "| objects | F1 at IoU 0.5 | precision | recall | true / found | V_rand | V_info |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, figures in objects.items():
        matching = figures.get("cells", figures)
        rows.append(
            f"| {name} | {_share(matching['f1'])} | {_share(matching['precision'])} "
            f"| {_share(matching['recall'])} | {matching['n_true']} / {matching['n_predicted']} "
            f"| {_share(figures.get('v_rand'))} | {_share(figures.get('v_info'))} |"
        )
    return rows


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def card(recipe: Recipe, figures: dict[str, Any]) -> str:
    """The model card: data, command, seed, held-out figures, use and limits."""
    return "\n".join(
        [
            f"# {recipe.name}",
            "",
            recipe.summary,
            "",
            f"Use it as `builtin:{recipe.name}` (`dlbio predict --model builtin:{recipe.name}`, "
            "or choose it in the widgets).",
            "",
            "## Intended use",
            "",
            recipe.intended_use,
            "",
            "## Training data",
            "",
            recipe.citation,
            "",
            f"**Terms.** {recipe.terms}",
            "",
            "## How it was trained",
            "",
            "```",
            f"python scripts/train_builtin_models.py --only {recipe.name}",
            "```",
            "",
            f"Settings (`dlbio train --config`, seed {SEED}; everything else is the default):",
            "",
            "```json",
            json.dumps(recipe.config, indent=2),
            "```",
            "",
            "The shipped model trained on all of the data in "
            f"{figures['final_training_seconds']} s on a 2-core CPU that other jobs shared "
            "(the recipe is a number of steps, so the result does not depend on the speed).",
            "",
            "## Held-out figures",
            "",
            f"The same recipe with {recipe.held_out_text} (`dlbio evaluate`; that training took "
            f"{figures['held_out_training_seconds']} s). The full report is in `metrics.json` "
            "under `held_out`.",
            "",
            *held_out_table(figures["held_out"]),
            "",
            "## Known limits",
            "",
            recipe.limits,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(RECIPES), help="models to train")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=REPO / "build" / "builtin-training")
    parser.add_argument(
        "--cards-only",
        action="store_true",
        help="score the last run's held-out model again and rewrite cards and record, "
        "without training",
    )
    args = parser.parse_args()
    if not (args.data / "isbi2012").is_dir():
        raise SystemExit(f"No ISBI 2012 data under {args.data}; see shared/data/README.md.")
    for name in args.only or sorted(RECIPES):
        work = args.work / name
        if args.cards_only:
            figures = reevaluate(RECIPES[name], args.data, work)
            install(RECIPES[name], work / "final-model", figures, network=False)
        else:
            figures = run_recipe(RECIPES[name], args.data, work)
        print(f"{name}, held out:", *held_out_table(figures["held_out"]), sep="\n", flush=True)


if __name__ == "__main__":
    main()
