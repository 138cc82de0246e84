"""V_rand / V_info, instance matching and ground-truth objects, checked by hand and by skimage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from skimage.metrics import adapted_rand_error, variation_of_information

from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.instance_metrics import (
    instance_report,
    label_slices,
    match_instances,
    rand_and_information_scores,
    truth_cells,
    truth_objects,
)

KEYS = {"v_rand", "v_rand_split", "v_rand_merge", "v_info", "v_info_split", "v_info_merge"}


def _blocks(seed: int, shape: tuple[int, int] = (48, 48), n: int = 9) -> np.ndarray:
    """A partition of the image into Voronoi-like cells labelled 1..n."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, shape[0], size=(n, 2))
    yy, xx = np.indices(shape)
    distances = (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2
    return distances.argmin(axis=-1) + 1


def _entropy_bits(labels: np.ndarray) -> float:
    counts = np.unique(labels, return_counts=True)[1] / labels.size
    return float(-(counts * np.log2(counts)).sum())


# --- V_rand and V_info -------------------------------------------------------------------


def test_perfect_segmentation_scores_one_whatever_the_label_values():
    truth = np.array([[1, 1, 0, 2, 2], [1, 1, 0, 2, 2], [3, 3, 3, 3, 3]])
    prediction = np.array([[7, 7, 7, 5, 5], [7, 7, 5, 5, 5], [9, 9, 9, 9, 9]])
    scores = rand_and_information_scores(truth, prediction)
    assert set(scores) == KEYS
    assert scores == pytest.approx(dict.fromkeys(KEYS, 1.0))


def test_one_merge_lowers_only_the_merge_scores():
    truth = np.array([[1, 1, 1, 1, 2, 2, 2, 2]])
    prediction = np.full_like(truth, 3)
    scores = rand_and_information_scores(truth, prediction)
    # sum n_ij^2 = 32, sum t^2 = 32, sum s^2 = 64; I = 0, H(T) = 1 bit, H(P) = 0.
    assert scores["v_rand_split"] == pytest.approx(1.0)
    assert scores["v_rand_merge"] == pytest.approx(0.5)
    assert scores["v_rand"] == pytest.approx(2 / 3)
    assert scores["v_info_split"] == pytest.approx(1.0)
    assert scores["v_info_merge"] == pytest.approx(0.0)
    assert scores["v_info"] == pytest.approx(0.0)


def test_one_split_lowers_only_the_split_scores():
    truth = np.array([[1, 1, 1, 1, 2, 2, 2, 2]])
    prediction = np.array([[1, 1, 1, 1, 2, 2, 3, 3]])
    scores = rand_and_information_scores(truth, prediction)
    # sum n_ij^2 = 24 = sum s^2, sum t^2 = 32; I = H(T) = 1 bit, H(P) = 1.5 bits.
    assert scores["v_rand_split"] == pytest.approx(0.75)
    assert scores["v_rand_merge"] == pytest.approx(1.0)
    assert scores["v_rand"] == pytest.approx(2 * 0.75 / 1.75)
    assert scores["v_info_split"] == pytest.approx(2 / 3)
    assert scores["v_info_merge"] == pytest.approx(1.0)
    assert scores["v_info"] == pytest.approx(0.8)


def test_only_true_cell_pixels_count():
    truth = np.array([[1, 1, 0, 0, 2, 2]])
    clean = np.array([[1, 1, 1, 2, 2, 2]])
    other_membrane_labels = np.array([[1, 1, 8, 9, 2, 2]])
    assert rand_and_information_scores(truth, clean) == rand_and_information_scores(
        truth, other_membrane_labels
    )


def test_empty_truth_gives_none_and_serialises():
    truth = np.zeros((4, 4), dtype=np.uint8)
    scores = rand_and_information_scores(truth, np.ones((4, 4), dtype=np.int32))
    assert scores == dict.fromkeys(KEYS)
    json.dumps(scores)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rand_scores_agree_with_skimage(seed):
    truth = _blocks(seed)
    truth[::7, :] = 0  # membrane rows, ignored
    prediction = _blocks(seed + 100, n=12)
    mine = rand_and_information_scores(truth, prediction)
    _, sk_first, sk_second = adapted_rand_error(truth, prediction, ignore_labels=(0,))
    # skimage counts distinct pixel pairs, (sum x^2 - n), where ISBI's p_ij^2 form counts a
    # pixel paired with itself too, and (scikit-image issue #6485) its "precision" is
    # normalised by the true segments, i.e. it is the split score.  Undo both with the
    # marginals computed here.
    inside = truth > 0
    n = float(inside.sum())
    t_sq = float((np.unique(truth[inside], return_counts=True)[1].astype(float) ** 2).sum())
    p_sq = float((np.unique(prediction[inside], return_counts=True)[1].astype(float) ** 2).sum())
    both_sq = sk_first * (t_sq - n) + n
    assert both_sq == pytest.approx(sk_second * (p_sq - n) + n)
    assert mine["v_rand_split"] == pytest.approx(both_sq / t_sq, rel=1e-9)
    assert mine["v_rand_merge"] == pytest.approx(both_sq / p_sq, rel=1e-9)
    split, merge = both_sq / t_sq, both_sq / p_sq
    assert mine["v_rand"] == pytest.approx(2 * split * merge / (split + merge), rel=1e-9)
    # and on these ~2000 pixels the two pair conventions differ by well under 1 %
    assert mine["v_rand_split"] == pytest.approx(sk_first, abs=0.01)
    assert mine["v_rand_merge"] == pytest.approx(sk_second, abs=0.01)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_information_scores_agree_with_skimage(seed):
    truth = _blocks(seed)
    truth[:, ::5] = 0
    prediction = _blocks(seed + 50, n=6)
    mine = rand_and_information_scores(truth, prediction)
    h_p_given_t, h_t_given_p = variation_of_information(truth, prediction, ignore_labels=(0,))
    inside = truth > 0
    h_t = _entropy_bits(truth[inside])
    h_p = _entropy_bits(prediction[inside])
    information = h_t - h_t_given_p
    assert information == pytest.approx(h_p - h_p_given_t)
    assert mine["v_info_split"] == pytest.approx(information / h_p, rel=1e-9)
    assert mine["v_info_merge"] == pytest.approx(information / h_t, rel=1e-9)
    assert mine["v_info"] == pytest.approx(2 * information / (h_t + h_p), rel=1e-9)


def test_unlabelled_predicted_pixels_are_single_pixel_segments():
    truth = _blocks(3, shape=(20, 20), n=4)
    prediction = _blocks(4, shape=(20, 20), n=5)
    prediction[5:9, 3:12] = 0
    singles = prediction.copy()
    holes = singles == 0
    singles[holes] = 100 + np.arange(holes.sum())
    got = rand_and_information_scores(truth, prediction)
    assert got == pytest.approx(rand_and_information_scores(truth, singles))


def test_huge_label_values_give_the_same_scores():
    truth = _blocks(5, shape=(24, 24), n=5).astype(np.uint64)
    prediction = _blocks(6, shape=(24, 24), n=7).astype(np.uint64)
    # above the int64 range: the labels cannot be used as indices as they are
    big, top = np.uint64(1) << np.uint64(58), np.uint64(1) << np.uint64(63)
    huge = rand_and_information_scores(truth * big + top, prediction * big + top)
    assert huge == pytest.approx(rand_and_information_scores(truth, prediction))
    huge_match = match_instances(truth * big + top, prediction * big)
    assert huge_match == match_instances(truth, prediction)


def test_per_slice_averages_sections_with_true_cells():
    truth = np.array(
        [
            [[1, 1, 1, 1, 2, 2, 2, 2]],
            [[3, 3, 3, 3, 4, 4, 4, 4]],
            [[0, 0, 0, 0, 0, 0, 0, 0]],
        ]
    )
    prediction = np.array(
        [
            [[1, 1, 1, 1, 2, 2, 2, 2]],
            [[5, 5, 5, 5, 5, 5, 5, 5]],  # merged
            [[6, 6, 6, 6, 6, 6, 6, 6]],  # no true cells: not scored
        ]
    )
    per_slice = rand_and_information_scores(truth, prediction, per_slice=True)
    assert per_slice["v_rand"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert per_slice["v_rand_merge"] == pytest.approx(0.75)
    assert per_slice["v_info"] == pytest.approx(0.5)
    pooled = rand_and_information_scores(truth, prediction)
    # pooled: sum n_ij^2 = 64 over both slices, sum s^2 = 32 + 64
    assert pooled["v_rand_merge"] == pytest.approx(64 / 96)
    assert rand_and_information_scores(truth[0], prediction[0], per_slice=True)["v_rand"] == 1.0


@pytest.mark.parametrize(
    ("truth", "prediction"),
    [
        (np.ones((3, 3), int), np.ones((3, 4), int)),
        (np.ones((3, 3), float), np.ones((3, 3), int)),
        (np.ones((3, 3), int), -np.ones((3, 3), int)),
        (np.ones(3, int), np.ones(3, int)),
    ],
)
def test_unusable_labels_are_rejected(truth, prediction):
    with pytest.raises(InputDataError):
        rand_and_information_scores(truth, prediction)
    with pytest.raises(InputDataError):
        match_instances(truth, prediction)


# --- instance matching -------------------------------------------------------------------

THREE = np.array(
    [
        [1, 1, 0, 2, 2, 0],
        [1, 1, 0, 2, 2, 0],
        [0, 0, 0, 0, 0, 0],
        [3, 3, 3, 0, 0, 0],
    ]
)


def test_perfect_match():
    prediction = np.choose(THREE, [0, 9, 4, 6])
    result = match_instances(THREE, prediction)
    assert result == {
        "true_positives": 3,
        "false_positives": 0,
        "false_negatives": 0,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "mean_matched_iou": 1.0,
        "n_true": 3,
        "n_predicted": 3,
    }


def test_missed_object_is_a_false_negative():
    prediction = np.where(THREE == 3, 0, THREE)
    result = match_instances(THREE, prediction)
    assert (result["true_positives"], result["false_negatives"]) == (2, 1)
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["precision"] == 1.0
    assert result["f1"] == pytest.approx(0.8)


def test_extra_object_is_a_false_positive():
    prediction = THREE.copy()
    prediction[:2, 5] = 8
    result = match_instances(THREE, prediction)
    assert (result["true_positives"], result["false_positives"]) == (3, 1)
    assert result["precision"] == pytest.approx(0.75)
    assert result["n_predicted"] == 4


@pytest.mark.parametrize(("extra", "matched"), [(99, True), (100, False), (101, False)])
def test_iou_must_be_above_the_threshold(extra, matched):
    truth = np.zeros((1, 220), dtype=np.int32)
    truth[0, :100] = 1
    prediction = np.zeros_like(truth)
    prediction[0, : 100 + extra] = 1  # IoU = 100 / (100 + extra): 0.5025, 0.5, 0.4975
    result = match_instances(truth, prediction, iou_threshold=0.5)
    assert result["true_positives"] == int(matched)
    if matched:
        assert result["mean_matched_iou"] == pytest.approx(100 / 199)
    else:
        assert result["mean_matched_iou"] is None


def test_objects_of_different_slices_never_match():
    truth = np.zeros((2, 6, 6), dtype=np.uint32)
    prediction = np.zeros_like(truth)
    truth[0, 1:4, 1:4] = 1
    prediction[1, 1:4, 1:4] = 2  # same place, next slice
    result = match_instances(truth, prediction)
    assert (result["true_positives"], result["false_positives"], result["false_negatives"]) == (
        0,
        1,
        1,
    )
    assert match_instances(truth.max(axis=0), prediction.max(axis=0))["true_positives"] == 1


def test_stack_labelled_per_slice_matches_slice_by_slice():
    masks = np.zeros((3, 8, 8), dtype=bool)
    masks[:, 1:4, 1:4] = True  # the same square in every slice: three objects
    masks[1, 5:7, 5:7] = True
    truth = truth_objects(masks)
    prediction = truth_objects(np.roll(masks, 1, axis=0))
    result = match_instances(truth, prediction)
    assert result["n_true"] == result["n_predicted"] == 4
    assert result["true_positives"] == 3  # the small square moved to another slice
    assert result["false_positives"] == result["false_negatives"] == 1


def test_low_threshold_matching_is_one_to_one_and_optimal():
    truth = np.zeros((1, 20), dtype=np.int32)
    truth[0, :10] = 1  # A
    truth[0, 10:] = 2  # B
    prediction = np.zeros_like(truth)
    prediction[0, :4] = 5  # P2: IoU with A 0.4
    prediction[0, 4:14] = 6  # P1: IoU with A 6/14, with B 4/16
    result = match_instances(truth, prediction, iou_threshold=0.2)
    # greedy (best IoU first) would pair P1 with A and leave B and P2 unmatched
    assert result["true_positives"] == 2
    assert result["mean_matched_iou"] == pytest.approx((0.4 + 0.25) / 2)
    one = np.where(prediction > 0, 7, 0)
    assert match_instances(truth, one, iou_threshold=0.0)["true_positives"] == 1


def _reference_tp(truth: np.ndarray, prediction: np.ndarray, threshold: float) -> int:
    t_ids = np.unique(truth[truth > 0])
    p_ids = np.unique(prediction[prediction > 0])
    iou = np.zeros((t_ids.size, p_ids.size))
    for i, t in enumerate(t_ids):
        for j, p in enumerate(p_ids):
            a, b = truth == t, prediction == p
            iou[i, j] = (a & b).sum() / (a | b).sum()
    ok = iou > threshold
    if threshold >= 0.5:
        return int(ok.sum())
    rows, cols = linear_sum_assignment(-ok.astype(float) - iou / (2 * min(iou.shape)))
    return int(ok[rows, cols].sum())


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.5, 0.7])
@pytest.mark.parametrize("seed", [0, 1])
def test_matching_agrees_with_a_dense_reference(threshold, seed):
    truth = _blocks(seed, shape=(32, 32), n=8)
    truth[truth == 3] = 0
    prediction = _blocks(seed + 10, shape=(32, 32), n=11)
    prediction[:, :4] = 0
    result = match_instances(truth, prediction, iou_threshold=threshold)
    assert result["true_positives"] == _reference_tp(truth, prediction, threshold)
    assert result["true_positives"] <= min(result["n_true"], result["n_predicted"])


def test_no_objects_gives_none():
    empty = np.zeros((4, 4), dtype=np.uint16)
    result = match_instances(empty, empty)
    assert result["n_true"] == result["n_predicted"] == result["true_positives"] == 0
    for key in ("precision", "recall", "f1", "mean_matched_iou"):
        assert result[key] is None
    missed = match_instances(np.ones((4, 4), dtype=np.uint16), empty)
    assert (missed["precision"], missed["recall"], missed["f1"]) == (None, 0.0, 0.0)
    json.dumps(missed)


@pytest.mark.parametrize("threshold", [-0.1, 1.0])
def test_threshold_outside_range_is_rejected(threshold):
    with pytest.raises(InputDataError):
        match_instances(THREE, THREE, iou_threshold=threshold)


# --- ground-truth objects ------------------------------------------------------------------


def test_truth_cells_are_4_connected_regions_between_membranes():
    boundary = np.array(
        [
            [0, 0, 1, 0],
            [0, 0, 1, 0],
            [1, 1, 0, 1],
            [0, 1, 0, 0],
        ],
        dtype=bool,
    )
    cells = truth_cells(boundary)
    assert cells.dtype == np.uint32
    assert (cells[boundary] == 0).all()
    # the four regions touch only at corners: four cells
    assert len(np.unique(cells[~boundary])) == 4
    assert cells[0, 0] != cells[0, 3] != cells[3, 0]


def test_truth_cells_of_a_stack_are_per_slice_and_unique():
    boundary = np.zeros((3, 5, 5), dtype=bool)
    boundary[:, 2, :] = True  # two cells per slice
    cells = truth_cells(boundary)
    assert cells.shape == boundary.shape
    assert sorted(np.unique(cells)) == list(range(7))
    for z in range(3):
        assert len(np.unique(cells[z][~boundary[z]])) == 2
    # the same place in two slices is two cells, not one 3-D cell
    assert cells[0, 0, 0] != cells[1, 0, 0]


def test_truth_objects_label_each_slice_separately():
    mask = np.zeros((2, 4, 4), dtype=np.uint8)
    mask[:, 0, 0] = 1
    mask[:, 1, 1] = 1  # diagonal neighbour: a separate object
    objects = truth_objects(mask)
    assert objects.dtype == np.uint32
    np.testing.assert_array_equal(objects[0][mask[0] > 0], [1, 2])
    np.testing.assert_array_equal(objects[1][mask[1] > 0], [3, 4])
    np.testing.assert_array_equal(label_slices(mask[0]), objects[0])


# --- the report ----------------------------------------------------------------------------


def _membrane_grid(shape: tuple[int, int, int] = (2, 21, 21)) -> np.ndarray:
    membranes = np.zeros(shape, dtype=bool)
    membranes[:, ::5, :] = True
    membranes[:, :, ::5] = True
    return membranes


def test_boundary_report_of_a_perfect_prediction():
    membranes = _membrane_grid()
    report = instance_report("boundary", membranes, membranes)
    assert report["role"] == "boundary"
    for key in KEYS:
        assert report[key] == pytest.approx(1.0)
    assert report["cells"]["f1"] == 1.0
    assert report["cells"]["n_true"] == 32
    assert report["cells"]["iou_threshold"] == 0.5
    json.dumps(report)


def test_boundary_report_sees_a_missing_membrane_as_a_merge():
    membranes = _membrane_grid()
    predicted = membranes.copy()
    predicted[0, 6:10, 10] = False  # a gap: two cells become one
    report = instance_report("boundary", membranes, predicted)
    assert report["v_rand_split"] == pytest.approx(1.0)
    assert report["v_rand_merge"] < 1.0
    assert report["v_info_merge"] < 1.0
    assert report["cells"]["false_negatives"] == 2
    assert report["cells"]["false_positives"] == 1


def test_object_report_and_given_objects():
    mask = np.zeros((2, 10, 10), dtype=bool)
    mask[0, 1:4, 1:4] = True
    mask[1, 5:9, 5:9] = True
    report = instance_report("object", mask, mask)
    assert report["role"] == "object"
    assert (report["f1"], report["n_true"], report["iou_threshold"]) == (1.0, 2, 0.5)
    assert "v_rand" not in report
    none_found = instance_report("object", mask, mask, predicted_objects=np.zeros(mask.shape, int))
    assert (none_found["recall"], none_found["precision"]) == (0.0, None)
    json.dumps(report)


def test_report_rejects_unknown_role_and_mismatched_masks():
    mask = np.zeros((4, 4), dtype=bool)
    with pytest.raises(InputDataError, match="role"):
        instance_report("membrane", mask, mask)
    with pytest.raises(InputDataError):
        instance_report("object", mask, mask[:3])
