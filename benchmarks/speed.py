"""Speed of napari-dlbio on this machine, next to the classic U-Net of the seed course.

Everything is measured in one run, so ratios compare like with like:

- hardware ceiling: float32 matmul and a large 3x3 Conv2D, in GFLOP/s;
- training: the default segmentation config through the engine, and the classic U-Net
  (depth 4, 64 filters, no batch norm, dropout 0.5, Adam 1e-4, batch 2, weighted
  cross-entropy) through a plain ``model.fit`` as the course trains it, each for the same
  budget on ISBI 2012 slices 0-24 (the classic one on 512 augmented patches drawn up front
  and held in memory, as the course does): patches/s, achieved GFLOP/s, and held-out membrane IoU
  on slices 25-29 at the end.  The default run also probes the held-out IoU every few
  seconds of training (probe time counts against its budget) to find when it first
  reaches 0.70;
- inference: the 30 x 512 x 512 stack with the trained default model (megapixels/s,
  GFLOP/s, fraction of the Conv2D peak) and one warm 512 x 512 slice;
- a large volume (64 x 2048 x 2048 uint8 built by tiling ISBI, uncompressed TIFF) predicted
  by ``dlbio predict`` in a child process: peak RSS, and the mask checked complete on disk;
- the classifier: images/s training and predicting on PlantVillage, Grad-CAM per image.

FLOPs count the multiply-adds of convolutions (2 per multiply-add); training counts three
times the forward pass.  Prints a readable table; the last line is one JSON object.

Usage: python benchmarks/speed.py [--budget SECONDS] [--quick] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DLBIO_DATA", REPO.parent / "shared" / "data"))
TRAIN, TEST = slice(0, 25), slice(25, 30)
TARGET_IOU = 0.70
# Augmented patches the classic baseline trains on (the course extracts them up front).
CLASSIC_PATCHES = 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds per run")
    parser.add_argument("--quick", action="store_true", help="short runs to check the script")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared/data folder")
    args = parser.parse_args()
    budget = 20.0 if args.quick else args.budget
    isbi = IsbiSplit(args.data)

    figures: dict[str, Any] = {"budget_s": budget}
    figures |= hardware_peaks()
    print(
        f"peak: conv {figures['peak_conv_gflops']} GFLOP/s, matmul {figures['peak_matmul_gflops']}"
    )
    default = train_default(isbi, budget)
    print(f"default: {default['patches_per_s']} patches/s, IoU {default['iou']:.4f}", flush=True)
    classic = train_classic(isbi, budget)
    print(f"classic: {classic['patches_per_s']} patches/s, IoU {classic['iou']:.4f}", flush=True)
    inference = inference_speed(default["model"], isbi)
    with tempfile.TemporaryDirectory(prefix="dlbio-speed-") as work:
        large = large_volume(default["model"], isbi, Path(work), slices=8 if args.quick else 64)
    classifier = classifier_speed(args.data, seconds=20.0 if args.quick else 60.0)

    peak = figures["peak_conv_gflops"]
    figures |= {
        "train_patches_per_s": default["patches_per_s"],
        "train_gflops": default["gflops"],
        "classic_train_patches_per_s": classic["patches_per_s"],
        "classic_train_gflops": classic["gflops"],
        "train_speedup_vs_classic": round(default["patches_per_s"] / classic["patches_per_s"], 1),
        "iou_after_5min": round(default["iou"], 4),
        "classic_iou_after_5min": round(classic["iou"], 4),
        "iou_gain_vs_classic": round(default["iou"] - classic["iou"], 4),
        "seconds_to_iou_070": default["seconds_to_target"],
        "iou_probes": default["probes"],
        "inference_mpix_per_s": inference["mpix_per_s"],
        "inference_gflops": inference["gflops"],
        "inference_fraction_of_peak": round(inference["gflops"] / peak, 3),
        "slice_predict_s": inference["slice_s"],
        "large_volume_shape": large["shape"],
        "large_volume_seconds": large["seconds"],
        "large_volume_peak_rss_gib": large["peak_rss_gib"],
        "large_volume_mask_complete": large["complete"],
        **classifier,
    }
    print_table(figures)
    print(json.dumps(figures))


class IsbiSplit:
    """ISBI 2012 training slices 0-24 and held-out slices 25-29 (membrane = label 0)."""

    def __init__(self, data: Path) -> None:
        from napari_dlbio.core.labels import annotation_from_dense

        folder = data / "isbi2012"
        if not folder.is_dir():
            raise SystemExit(f"{folder} is missing; point --data at the shared data folder.")
        self.volume = tifffile.imread(folder / "train-volume.tif")
        labels = tifffile.imread(folder / "train-labels.tif")
        mapping = {255: "background", 0: "membrane"}
        self.annotation = annotation_from_dense(labels, mapping, ("background", "membrane"))

    def heldout_iou(self, model: Any) -> float:
        """Membrane IoU of ``model`` (a ModelFolder) on slices 25-29."""
        from napari_dlbio.models.segmentation import evaluate_segmentation, predict_segmentation

        prediction = predict_segmentation(model, self.volume[TEST])
        report = evaluate_segmentation(
            prediction.mask, self.annotation[TEST], model.config.class_names
        )
        return float(report["classes"]["membrane"]["iou"])


def hardware_peaks() -> dict[str, float]:
    """Best GFLOP/s of a 2048 x 2048 float32 matmul and of a 3x3 Conv2D over 256 channels."""
    from napari_dlbio.models._tf import load_tensorflow

    tf = load_tensorflow()
    a = tf.random.normal((2048, 2048))
    x = tf.random.normal((4, 64, 64, 256))
    kernel = tf.random.normal((3, 3, 256, 256))
    matmul = tf.function(lambda a: tf.matmul(a, a))
    conv = tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"))
    return {
        "peak_matmul_gflops": round(2 * 2048**3 / _best_seconds(matmul, a) / 1e9, 1),
        "peak_conv_gflops": round(
            2 * 9 * 256 * 256 * 4 * 64 * 64 / _best_seconds(conv, x, kernel) / 1e9, 1
        ),
    }


def _best_seconds(function: Any, *args: Any, repeats: int = 7) -> float:
    function(*args).numpy()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function(*args).numpy()
        times.append(time.perf_counter() - started)
    return min(times)


def forward_flops_per_pixel(keras_model: Any) -> float:
    """Convolution FLOPs of one forward pass per input pixel."""
    from napari_dlbio.models._tf import load_keras

    keras = load_keras()
    convolutions = [
        layer
        for layer in keras_model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))
    ]
    side = 256
    probe = keras.Model(keras_model.inputs, [layer.input for layer in convolutions])
    channels = keras_model.inputs[0].shape[-1]
    inputs = probe(np.zeros((1, side, side, channels), np.float32))
    total = 0.0
    for layer, layer_input in zip(convolutions, inputs, strict=True):
        height, width, in_channels = layer_input.shape[1:]
        kernel = int(np.prod(layer.kernel_size))
        positions = height * width  # a transposed convolution spreads every input pixel
        if not isinstance(layer, keras.layers.Conv2DTranspose):
            positions //= int(np.prod(layer.strides))
        total += 2.0 * kernel * in_channels * layer.filters * positions
    return total / side**2


class _Throughput:
    """Keras callback: patches/s over the batches after the first few (tracing, warm-up)."""

    def __init__(self, keras: Any, batch_size: int, skip: int = 5) -> None:
        outer = self

        class Callback(keras.callbacks.Callback):
            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                outer.batches += 1
                if outer.batches == skip:
                    outer.started = time.perf_counter()
                outer.ended = time.perf_counter()

        self.callback = Callback()
        self.batch_size = batch_size
        self.skip = skip
        self.batches = 0
        self.started = self.ended = 0.0

    def patches_per_s(self) -> float:
        measured = self.batches - self.skip
        return measured * self.batch_size / max(self.ended - self.started, 1e-9)


def train_default(isbi: IsbiSplit, budget: float) -> dict[str, Any]:
    """Train the default config through the engine; probe held-out IoU during training."""
    from napari_dlbio.core.events import run_to_end
    from napari_dlbio.core.segmentation_config import SegmentationConfig
    from napari_dlbio.models._tf import load_keras
    from napari_dlbio.models.segmentation import iter_train_segmentation
    from napari_dlbio.models.store import ModelFolder

    keras = load_keras()
    config = SegmentationConfig(class_names=("background", "membrane"), time_budget_s=budget)
    throughput = _Throughput(keras, config.batch_size)
    probes: list[tuple[float, float]] = []
    started = time.perf_counter()

    class Probe(keras.callbacks.Callback):
        """Held-out IoU every 15 s of training, with the weights of that moment."""

        next_at = 15.0

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            elapsed = time.perf_counter() - started
            if elapsed < self.next_at:
                return
            self.next_at = elapsed + 15.0
            folder = ModelFolder(self.model, _segmentation_task(), config, None)
            probes.append((round(elapsed, 1), round(isbi.heldout_iou(folder), 4)))

    result = run_to_end(
        iter_train_segmentation(
            isbi.volume[TRAIN],
            isbi.annotation[TRAIN],
            config,
            callbacks=[throughput.callback, Probe()],
        )
    )
    model = result.model
    reached = [seconds for seconds, iou in probes if iou >= TARGET_IOU]
    patches = throughput.patches_per_s()
    return {
        "model": model,
        "iou": isbi.heldout_iou(model),
        "patches_per_s": round(patches, 2),
        "gflops": _training_gflops(model.model, patches, config.patch_size),
        "seconds_to_target": reached[0] if reached else None,
        "probes": probes,
    }


def train_classic(isbi: IsbiSplit, budget: float) -> dict[str, Any]:
    """The course's classic U-Net trained by a plain ``model.fit`` for ``budget`` seconds."""
    from napari_dlbio.core.segmentation_config import SegmentationConfig
    from napari_dlbio.models._tf import load_keras
    from napari_dlbio.models.losses import MaskedSegmentationLoss
    from napari_dlbio.models.segmentation_data import prepare_training_data, training_batches
    from napari_dlbio.models.store import ModelFolder
    from napari_dlbio.models.unet import build_unet

    keras = load_keras()
    config = SegmentationConfig.classic(class_names=("background", "membrane"))
    data = prepare_training_data(isbi.volume[TRAIN], isbi.annotation[TRAIN], config)
    model = build_unet(config.network, config.input_channels, config.n_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=MaskedSegmentationLoss(config.n_classes, config.loss, data.class_weights.tolist()),
    )
    throughput = _Throughput(keras, config.batch_size)
    deadline = time.perf_counter() + budget

    class Budget(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if time.perf_counter() >= deadline:
                self.model.stop_training = True

    # As the course trains: augmented patches in memory, then one plain model.fit.
    x, y = next(training_batches(data, config, CLASSIC_PATCHES, seed=config.seed))
    model.fit(
        x,
        y,
        batch_size=config.batch_size,
        epochs=10_000,
        callbacks=[throughput.callback, Budget()],
        verbose=0,
    )
    patches = throughput.patches_per_s()
    folder = ModelFolder(model, _segmentation_task(), config, None)
    return {
        "iou": isbi.heldout_iou(folder),
        "patches_per_s": round(patches, 2),
        "gflops": _training_gflops(model, patches, config.patch_size),
    }


def _segmentation_task() -> Any:
    from napari_dlbio.core.config import Task

    return Task.SEGMENTATION


def _training_gflops(keras_model: Any, patches_per_s: float, patch_size: int) -> float:
    flops = 3 * forward_flops_per_pixel(keras_model) * patch_size**2 * patches_per_s
    return round(flops / 1e9, 1)


def inference_speed(model: Any, isbi: IsbiSplit) -> dict[str, float]:
    """The 30-slice stack (after one warm-up slice) and the median of 5 warm slices."""
    from napari_dlbio.models.segmentation import predict_segmentation

    predict_segmentation(model, isbi.volume[:1])
    started = time.perf_counter()
    predict_segmentation(model, isbi.volume)
    seconds = time.perf_counter() - started
    slices = []
    for z in range(5):
        started = time.perf_counter()
        predict_segmentation(model, isbi.volume[z])
        slices.append(time.perf_counter() - started)
    megapixels_per_s = isbi.volume.size / 1e6 / seconds
    flops = forward_flops_per_pixel(model.model) * isbi.volume.size / seconds
    return {
        "mpix_per_s": round(megapixels_per_s, 2),
        "gflops": round(flops / 1e9, 1),
        "slice_s": round(float(np.median(slices)), 3),
    }


def large_volume(model: Any, isbi: IsbiSplit, work: Path, slices: int) -> dict[str, Any]:
    """``dlbio predict`` on a (slices, 2048, 2048) uint8 TIFF; peak RSS of the child process."""
    from napari_dlbio.models.store import save_model_folder

    model_dir = work / "model"
    save_model_folder(model_dir, model.model, model.task, model.config)
    volume_path, mask_path = work / "large.tif", work / "large_mask.tif"
    shape = (slices, 2048, 2048)
    with tifffile.TiffWriter(volume_path) as tif:
        for z in range(slices):
            plane = np.tile(isbi.volume[z % len(isbi.volume)], (4, 4))
            tif.write(plane, contiguous=True, photometric="minisblack")
    command = [
        sys.executable,
        "-c",
        "import sys; from napari_dlbio.cli import main; sys.exit(main())",
    ]
    arguments = ["predict", "--model", str(model_dir), "--images", str(volume_path)]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(
            [*command, *arguments, "--out", str(mask_path), "--quiet"], stderr=err
        )
        peak_kib = 0
        # The child's own high-water mark, read while it runs: its ru_maxrss would also
        # count this (large) parent process, whose mark Linux carries over at exec.
        while child.poll() is None:
            peak_kib = max(peak_kib, _high_water_kib(child.pid))
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        if child.returncode != 0:
            err.seek(0)
            sys.stderr.write(err.read())
            raise SystemExit("dlbio predict failed on the large volume")
    with tifffile.TiffFile(mask_path) as tif:
        pages = len(tif.pages)
        last = tif.pages[-1].asarray()
    # Complete: every page there, and the last one holds membranes like a real slice.
    complete = pages == slices and last.shape == shape[1:] and 0.05 < float(last.mean()) < 0.6
    return {
        "shape": list(shape),
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(peak_kib / 2**20, 2),
        "complete": bool(complete),
    }


def _high_water_kib(pid: int) -> int:
    """Peak resident memory (VmHWM) of a running process in KiB, 0 once it has ended."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def classifier_speed(data: Path, seconds: float) -> dict[str, float]:
    """Classifier images/s (train, predict) and Grad-CAM ms per image on PlantVillage."""
    from napari_dlbio.core.class_dataset import load_class_folder
    from napari_dlbio.core.classifier_config import ClassifierConfig
    from napari_dlbio.core.events import run_to_end
    from napari_dlbio.models.classification import iter_train_classifier, predict_classifier
    from napari_dlbio.models.gradcam import grad_cam

    config = ClassifierConfig(time_budget_s=seconds)
    photos = load_class_folder(data / "plantvillage", config.input_size)
    config = config.replace(class_names=photos.class_names)
    result = run_to_end(iter_train_classifier(photos.images, photos.class_indices, config))
    epochs = len(result.fit.history["loss"])
    train_images = epochs * int(np.ceil(0.8 * len(photos.paths) / config.batch_size))
    train_images *= config.batch_size
    predict_classifier(result.model, photos.images[:8])
    started = time.perf_counter()
    predict_classifier(result.model, photos.images)
    predict_seconds = time.perf_counter() - started
    cams = []
    for image in photos.images[:20]:
        started = time.perf_counter()
        grad_cam(result.model, image)
        cams.append(time.perf_counter() - started)
    return {
        "classifier_train_images_per_s": round(train_images / result.fit.seconds, 1),
        "classifier_predict_images_per_s": round(len(photos.images) / predict_seconds, 1),
        "gradcam_ms_per_image": round(1000 * float(np.median(cams[1:])), 1),
    }


def print_table(figures: dict[str, Any]) -> None:
    rows = [
        ("Conv2D peak (GFLOP/s)", figures["peak_conv_gflops"], None),
        ("matmul peak (GFLOP/s)", figures["peak_matmul_gflops"], None),
        (
            "training patches/s",
            figures["train_patches_per_s"],
            figures["classic_train_patches_per_s"],
        ),
        ("training GFLOP/s", figures["train_gflops"], figures["classic_train_gflops"]),
        (
            f"held-out IoU after {figures['budget_s']:.0f} s",
            figures["iou_after_5min"],
            figures["classic_iou_after_5min"],
        ),
        (f"seconds to IoU {TARGET_IOU}", figures["seconds_to_iou_070"], None),
        ("inference Mpx/s (30 slices)", figures["inference_mpix_per_s"], None),
        ("inference GFLOP/s", figures["inference_gflops"], None),
        ("inference share of Conv2D peak", figures["inference_fraction_of_peak"], None),
        ("one 512x512 slice (s)", figures["slice_predict_s"], None),
        ("large volume peak RSS (GiB)", figures["large_volume_peak_rss_gib"], None),
        ("large volume seconds", figures["large_volume_seconds"], None),
        ("large volume mask complete", figures["large_volume_mask_complete"], None),
        ("classifier train images/s", figures["classifier_train_images_per_s"], None),
        ("classifier predict images/s", figures["classifier_predict_images_per_s"], None),
        ("Grad-CAM ms/image", figures["gradcam_ms_per_image"], None),
    ]
    print()
    print(f"{'figure':<36}{'default':>12}{'classic':>12}")
    for name, value, classic in rows:
        print(f"{name:<36}{_cell(value):>12}{_cell(classic):>12}")
    print(f"held-out IoU during training (s, IoU): {figures['iou_probes']}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
