"""Object-level scores: how well predicted cells and objects agree with the true ones.

Pixel IoU says how many pixels are right; it cannot tell one merged cell from two correct
ones, and in connectomics a one-pixel gap in a membrane (a merge) costs far more than a
thick one.  The field therefore scores objects:

* boundary classes (membranes) by the foreground-restricted Rand and information scores of
  ISBI 2012 (Arganda-Carreras et al. 2015, "Crowdsourcing the creation of image segmentation
  algorithms for connectomics", Front. Neuroanat. 9:142): only pixels inside true cells count,
  and the predicted cells are compared with the true ones as two partitions of those pixels;
* object classes (mitochondria) by instance matching at an IoU threshold, as StarDist's
  ``matching``: precision, recall and F1 over objects, and the mean IoU of matched pairs.

Both tables of overlaps are sparse (``scipy.sparse``): a 30 x 512 x 512 stack has millions
of pixels but only thousands of (true, predicted) label pairs, and labels may be any
non-negative integers up to uint64.  Slices of a stack are independent sections here: the
ground truth is labelled slice by slice with labels unique across the stack, so objects of
different slices never overlap and are never matched with each other.

Undefined figures (no true pixels, no objects) are ``None``, never NaN, so reports always
serialise to JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage, sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csgraph

from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.metrics import check_same_shape
from napari_dlbio.core.objects import BOUNDARY, OBJECT, fill_boundaries

_SCORE_KEYS = ("v_rand", "v_rand_split", "v_rand_merge", "v_info", "v_info_split", "v_info_merge")
# Largest label used directly as a sparse-table index; above it labels are renumbered first
# (a sort) so that the table's index arrays stay proportional to the number of pixels.
_DIRECT_LABELS = 1 << 22


def _check_pair(truth: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(truth)
    prediction = np.asarray(prediction)
    check_same_shape(truth, prediction)
    if truth.ndim not in (2, 3):
        raise InputDataError(
            f"Expected label images of shape (Y, X) or (Z, Y, X), got shape {truth.shape}."
        )
    for what, labels in (("truth", truth), ("prediction", prediction)):
        if labels.dtype != bool and not np.issubdtype(labels.dtype, np.integer):
            raise InputDataError(
                f"The {what} labels must be whole numbers (integer array), got {labels.dtype}."
            )
        if np.issubdtype(labels.dtype, np.signedinteger) and labels.size and labels.min() < 0:
            raise InputDataError(f"The {what} labels must not be negative.")
    return truth, prediction


def _codes(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels as table indices 0..n-1, with label 0 (background) kept as index 0."""
    labels = labels.reshape(-1)
    if labels.size == 0:
        return np.zeros(0, dtype=np.intp), 1
    high = int(labels.max())
    if high <= max(_DIRECT_LABELS, 2 * labels.size):
        return labels.astype(np.intp, copy=False), high + 1
    values, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(-1).astype(np.intp, copy=False)
    if values[0] != 0:
        inverse += 1
        return inverse, values.size + 1
    return inverse, values.size


def _pair_counts(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sparse.coo_array:
    """Sparse contingency table: how many pixels carry each (row, column) label pair."""
    ones = np.ones(rows.size, dtype=np.int64)
    table = sparse.csr_array((ones, (rows, cols)), shape=shape)
    table.sum_duplicates()
    return table.tocoo()


def _sum_x_log_x(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    return float(np.dot(counts, np.log(counts)))


def _harmonic(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2.0 * a * b / (a + b)


def _partition_scores(truth: np.ndarray, prediction: np.ndarray) -> dict[str, float | None]:
    """The six scores of one block of pixels (a slice or a whole volume)."""
    inside = truth.reshape(-1) != 0
    n = int(np.count_nonzero(inside))
    if n == 0:
        return dict.fromkeys(_SCORE_KEYS)
    t_codes, n_t = _codes(truth.reshape(-1)[inside])
    p_labels = prediction.reshape(-1)[inside]
    labelled = p_labels != 0
    # Unlabelled predicted pixels inside a true cell are singletons, as in the ISBI/SNEMI
    # scripts: a gap left unfilled is not one big object that happens to agree.
    singletons = float(n - np.count_nonzero(labelled))
    p_codes, n_p = _codes(p_labels[labelled])
    table = _pair_counts(t_codes[labelled], p_codes, (n_t, n_p))
    joint = table.data.astype(np.float64)
    t_sizes = np.bincount(t_codes).astype(np.float64)
    p_sizes = np.bincount(p_codes).astype(np.float64)

    # Rand: sums of squared counts (pairs of pixels, each pixel paired with itself too, the
    # p_ij^2 normalisation of the paper); ratios do not need the division by n^2.
    same_both = float(np.dot(joint, joint)) + singletons
    same_truth = float(np.dot(t_sizes, t_sizes))
    same_prediction = float(np.dot(p_sizes, p_sizes)) + singletons
    rand_split = same_both / same_truth
    rand_merge = same_both / same_prediction

    # Information: H = log n - sum(c log c) / n for each distribution (natural log; the
    # scores are ratios, so the base does not matter); singletons add 1 * log 1 = 0.
    log_n = float(np.log(n))
    h_truth = log_n - _sum_x_log_x(t_sizes) / n
    h_prediction = log_n - _sum_x_log_x(p_sizes) / n
    h_joint = log_n - _sum_x_log_x(joint) / n
    h_truth_given_prediction = max(h_joint - h_prediction, 0.0)
    h_prediction_given_truth = max(h_joint - h_truth, 0.0)
    # split = I / H(prediction) = 1 - H(P|T) / H(P); a partition with zero entropy (one
    # segment) has nothing to split or merge, so its score is 1 rather than 0/0.
    info_split = 1.0 - h_prediction_given_truth / h_prediction if h_prediction > 0 else 1.0
    info_merge = 1.0 - h_truth_given_prediction / h_truth if h_truth > 0 else 1.0
    info_split = min(max(info_split, 0.0), 1.0)
    info_merge = min(max(info_merge, 0.0), 1.0)
    return {
        "v_rand": _harmonic(rand_split, rand_merge),
        "v_rand_split": rand_split,
        "v_rand_merge": rand_merge,
        "v_info": _harmonic(info_split, info_merge),
        "v_info_split": info_split,
        "v_info_merge": info_merge,
    }


def rand_and_information_scores(
    truth: np.ndarray, prediction: np.ndarray, *, per_slice: bool = False
) -> dict[str, float | None]:
    """Foreground-restricted Rand and information F-scores (V_rand, V_info) of ISBI 2012.

    Only pixels with ``truth > 0`` count.  With ``n_ij`` the number of those pixels in true
    cell ``i`` and predicted cell ``j``, ``t_i`` and ``s_j`` the cell sizes:

    * ``v_rand_split = sum n_ij^2 / sum t_i^2`` and ``v_rand_merge = sum n_ij^2 / sum s_j^2``
      (the paper's ``p_ij^2`` form, where a pixel pairs with itself too);
    * ``v_info_split = I(T; P) / H(P)`` and ``v_info_merge = I(T; P) / H(T)``;
    * ``v_rand`` and ``v_info`` are the harmonic means (F-scores) of their split and merge
      parts.  All six are in [0, 1], 1 for a perfect segmentation; a split lowers the split
      scores, a merge the merge scores.

    Parameters
    ----------
    truth : np.ndarray
        True cells, integer labels (Y, X) or (Z, Y, X); 0 = outside every cell (membrane),
        left out of the score.
    prediction : np.ndarray
        Predicted cells, same shape: a full label image, so fill the gaps left by predicted
        membranes first (e.g. ``skimage.segmentation.expand_labels``).  Pixels labelled 0 in
        it that are inside a true cell count as single-pixel segments, as in the ISBI script.
    per_slice : bool
        False scores all pixels together (a 3-D volume, or a single slice).  True scores each
        Z slice of a (Z, Y, X) stack on its own and averages each figure over the slices
        that contain true cells, as ISBI 2012 scored its 2-D sections; each average is of
        the slices' own figures (``v_rand`` is the mean of the slices' F-scores).

    Returns
    -------
    dict
        ``{"v_rand", "v_rand_split", "v_rand_merge", "v_info", "v_info_split",
        "v_info_merge"}``, floats, all ``None`` when the truth has no cell pixels.

    Raises
    ------
    InputDataError
        When shapes differ, the arrays are not 2-D or 3-D, or labels are not non-negative
        integers.
    """
    truth, prediction = _check_pair(truth, prediction)
    if not per_slice or truth.ndim == 2:
        return _partition_scores(truth, prediction)
    slices = [_partition_scores(truth[z], prediction[z]) for z in range(truth.shape[0])]
    scored = [s for s in slices if s["v_rand"] is not None]
    if not scored:
        return dict.fromkeys(_SCORE_KEYS)
    return {key: float(np.mean([s[key] for s in scored])) for key in _SCORE_KEYS}


def _one_to_one(
    rows: np.ndarray, cols: np.ndarray, ious: np.ndarray, threshold: float
) -> np.ndarray:
    """Indices of the candidate pairs kept by an optimal one-to-one matching.

    Candidates (IoU > threshold) fall into connected groups; a group with a single pair is
    matched as it is (always the case for thresholds >= 0.5), a larger group by
    ``linear_sum_assignment``, which first maximises the number of matches and then their
    total IoU, as StarDist's matching does.  Working group by group keeps the assignment
    problems tiny on stacks with thousands of objects.
    """
    if rows.size == 0:
        return np.zeros(0, dtype=np.intp)
    true_ids, true_index = np.unique(rows, return_inverse=True)
    pred_ids, pred_index = np.unique(cols, return_inverse=True)
    n_nodes = true_ids.size + pred_ids.size
    graph = sparse.coo_array(
        (np.ones(rows.size), (true_index, pred_index + true_ids.size)), shape=(n_nodes, n_nodes)
    )
    _, component = csgraph.connected_components(graph, directed=False)
    edge_group = component[true_index]
    group_size = np.bincount(edge_group)
    keep = [np.flatnonzero(group_size[edge_group] == 1)]
    order = np.argsort(edge_group, kind="stable")
    starts = np.searchsorted(edge_group[order], np.flatnonzero(group_size > 1))
    for start in starts:
        edges = order[start : start + group_size[edge_group[order[start]]]]
        local_rows, r = np.unique(true_index[edges], return_inverse=True)
        local_cols, c = np.unique(pred_index[edges], return_inverse=True)
        scores = np.zeros((local_rows.size, local_cols.size))
        scores[r, c] = ious[edges]
        edge_at = np.full(scores.shape, -1, dtype=np.intp)
        edge_at[r, c] = edges
        possible = scores > threshold
        costs = -possible.astype(np.float64) - scores / (2 * min(scores.shape))
        chosen_r, chosen_c = linear_sum_assignment(costs)
        ok = possible[chosen_r, chosen_c]
        keep.append(edge_at[chosen_r[ok], chosen_c[ok]])
    return np.concatenate(keep)


def match_instances(
    truth: np.ndarray, prediction: np.ndarray, iou_threshold: float = 0.5
) -> dict[str, float | int | None]:
    """Match true and predicted objects one to one by IoU, and count hits and misses.

    A true and a predicted object match when their IoU is above ``iou_threshold``
    (strictly).  For thresholds of 0.5 or more such pairs are necessarily one to one; below
    0.5 an optimal one-to-one matching is chosen (most matches, then highest total IoU).

    Parameters
    ----------
    truth, prediction : np.ndarray
        Instance labels (0 = no object), same shape, (Y, X) or (Z, Y, X).  In a stack of
        independent sections labels must be unique across the stack (``truth_objects`` and
        ``truth_cells`` make them so): objects of different slices share no pixel, so they
        are never matched, while a label reused in two slices would be one object.
    iou_threshold : float
        In [0, 1); 0.5 is the usual choice.

    Returns
    -------
    dict
        ``{"true_positives", "false_positives", "false_negatives", "precision", "recall",
        "f1", "mean_matched_iou", "n_true", "n_predicted"}``.  Counts are ints; precision
        is ``None`` without predicted objects, recall without true ones, F1 without either,
        and the mean IoU without matches.

    Raises
    ------
    InputDataError
        When shapes differ, the threshold is outside [0, 1) or labels are not
        non-negative integers.
    """
    truth, prediction = _check_pair(truth, prediction)
    if not 0.0 <= float(iou_threshold) < 1.0:
        raise InputDataError(f"The IoU threshold must be in [0, 1), got {iou_threshold}.")
    t_codes, n_t = _codes(truth)
    p_codes, n_p = _codes(prediction)
    t_areas = np.bincount(t_codes, minlength=n_t)
    p_areas = np.bincount(p_codes, minlength=n_p)
    n_true = int(np.count_nonzero(t_areas[1:]))
    n_predicted = int(np.count_nonzero(p_areas[1:]))

    both = (t_codes != 0) & (p_codes != 0)
    overlaps = _pair_counts(t_codes[both], p_codes[both], (n_t, n_p))
    rows, cols = overlaps.coords
    inter = overlaps.data.astype(np.float64)
    ious = inter / (t_areas[rows] + p_areas[cols] - inter)
    candidate = ious > iou_threshold
    rows, cols, ious = rows[candidate], cols[candidate], ious[candidate]
    matched = ious[_one_to_one(rows, cols, ious, float(iou_threshold))]

    tp = int(matched.size)
    return {
        "true_positives": tp,
        "false_positives": n_predicted - tp,
        "false_negatives": n_true - tp,
        "precision": tp / n_predicted if n_predicted else None,
        "recall": tp / n_true if n_true else None,
        "f1": 2 * tp / (n_true + n_predicted) if n_true + n_predicted else None,
        "mean_matched_iou": float(matched.mean()) if tp else None,
        "n_true": n_true,
        "n_predicted": n_predicted,
    }


def label_slices(mask: np.ndarray) -> np.ndarray:
    """Connected components (4-connectivity) of a mask, slice by slice.

    Parameters
    ----------
    mask : np.ndarray
        (Y, X) or (Z, Y, X); nonzero pixels are foreground.

    Returns
    -------
    np.ndarray
        uint32 labels of the same shape, 0 = background, numbered 1.. through the whole
        stack so that no two slices share a label.
    """
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise InputDataError(f"Expected a mask of shape (Y, X) or (Z, Y, X), got {mask.shape}.")
    stack = mask.reshape((-1, *mask.shape[-2:])) != 0
    out = np.zeros(stack.shape, dtype=np.uint32)
    total = 0
    for z in range(stack.shape[0]):
        labels, count = ndimage.label(stack[z])
        if total + count > np.iinfo(np.uint32).max:
            raise InputDataError("The stack has more objects than uint32 labels can number.")
        out[z] = np.where(labels > 0, labels + total, 0)
        total += count
    return out.reshape(mask.shape)


def truth_cells(boundary: np.ndarray) -> np.ndarray:
    """True cells from a boundary (membrane) mask: the regions the membranes enclose.

    Parameters
    ----------
    boundary : np.ndarray
        (Y, X) or (Z, Y, X); nonzero = membrane.  For ISBI 2012 labels (0 = membrane,
        255 = cell) pass ``labels == 0``.

    Returns
    -------
    np.ndarray
        uint32 cells, 4-connected components of the non-membrane pixels of each slice,
        labels unique across the stack; membrane pixels are 0.
    """
    return label_slices(np.asarray(boundary) == 0)


def truth_objects(mask: np.ndarray) -> np.ndarray:
    """True objects from a class mask: its 4-connected regions of each slice.

    Parameters
    ----------
    mask : np.ndarray
        (Y, X) or (Z, Y, X); nonzero = the class (e.g. mitochondria).

    Returns
    -------
    np.ndarray
        uint32 object labels, unique across the stack, 0 = background.
    """
    return label_slices(mask)


def instance_report(
    role: str,
    truth_mask: np.ndarray,
    predicted_mask: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    predicted_objects: np.ndarray | None = None,
) -> dict[str, Any]:
    """Object scores of one segmentation class, as JSON-ready data.

    Parameters
    ----------
    role : str
        ``"boundary"`` (membranes: the objects are the cells they enclose) or ``"object"``
        (e.g. mitochondria: the objects are its connected regions).
    truth_mask, predicted_mask : np.ndarray
        Boolean (or nonzero) masks of the class, (Y, X) or (Z, Y, X), same shape; a stack
        is taken as independent 2-D sections.
    iou_threshold : float
        IoU above which a true and a predicted object match.
    predicted_objects : np.ndarray, optional
        Instance labels to score instead of the connected regions of ``predicted_mask``
        (e.g. a watershed's cells), unique across the stack.

    Returns
    -------
    dict
        For a boundary class ``{"role": "boundary", "v_rand", "v_rand_split",
        "v_rand_merge", "v_info", "v_info_split", "v_info_merge",
        "cells": {matching}}``: Rand and information scores averaged slice by slice over
        the true cells' pixels, with the filled predicted cells; the matching compares the
        unfilled predicted cells (interiors) with the true ones.  For an object class
        ``{"role": "object", matching}``.  ``matching`` is the output of
        :func:`match_instances` plus ``"iou_threshold"``.  Undefined figures are ``None``.

    Raises
    ------
    InputDataError
        For an unknown role or masks of different shapes.
    """
    role = str(getattr(role, "value", role))
    if role not in (BOUNDARY, OBJECT):
        raise InputDataError(f"The class role must be {BOUNDARY!r} or {OBJECT!r}, not {role!r}.")
    truth_mask = np.asarray(truth_mask)
    predicted_mask = np.asarray(predicted_mask)
    check_same_shape(truth_mask, predicted_mask)
    if role == OBJECT:
        truth = truth_objects(truth_mask)
        predicted = (
            truth_objects(predicted_mask) if predicted_objects is None else predicted_objects
        )
        return {
            "role": OBJECT,
            **match_instances(truth, predicted, iou_threshold),
            "iou_threshold": float(iou_threshold),
        }
    truth = truth_cells(truth_mask)
    cells = truth_cells(predicted_mask) if predicted_objects is None else predicted_objects
    filled = fill_boundaries(cells)
    return {
        "role": BOUNDARY,
        **rand_and_information_scores(truth, filled, per_slice=True),
        "cells": {
            **match_instances(truth, cells, iou_threshold),
            "iou_threshold": float(iou_threshold),
        },
    }
