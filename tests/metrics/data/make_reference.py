#!/usr/bin/env python3
"""Writes reference_metrics.json: metric values computed independently with sklearn 1.2 (Debian's
python3-sklearn) and the official MVTec AD PRO code (pro_curve_util.compute_pro + generic_util.
trapezoid, re-typed below) on small random data with ties. Run: /usr/bin/python3 make_reference.py"""
import json
from bisect import bisect

import numpy as np
import sklearn
from scipy.ndimage import label
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def f1_max(y, s):
    p, r, _ = precision_recall_curve(y, s)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0)
    return float(f1.max())


def compute_pro(anomaly_maps, ground_truth_maps):  # official MVTec AD evaluation code
    structure = np.ones((3, 3), dtype=int)
    num_ok_pixels = 0
    num_gt_regions = 0
    shape = (len(anomaly_maps), anomaly_maps[0].shape[0], anomaly_maps[0].shape[1])
    fp_changes = np.zeros(shape, dtype=np.uint32)
    pro_changes = np.zeros(shape, dtype=np.float64)
    for gt_ind, gt_map in enumerate(ground_truth_maps):
        labeled, n_components = label(gt_map, structure)
        num_gt_regions += n_components
        ok_mask = labeled == 0
        num_ok_pixels += np.sum(ok_mask)
        fp_changes[gt_ind, ok_mask] = 1
        for k in range(n_components):
            region_mask = labeled == (k + 1)
            pro_changes[gt_ind, region_mask] = 1. / np.sum(region_mask)
    scores = np.array(anomaly_maps).ravel()
    fp_changes = fp_changes.ravel()
    pro_changes = pro_changes.ravel()
    idx = np.argsort(scores, kind="stable").astype(np.uint32)[::-1]
    scores_sorted = scores[idx]
    fprs = np.cumsum(fp_changes[idx]).astype(np.float64) / num_ok_pixels
    pros = np.cumsum(pro_changes[idx]) / num_gt_regions
    keep = np.append(np.diff(scores_sorted) != 0, np.True_)
    fprs, pros = np.clip(fprs[keep], None, 1.), np.clip(pros[keep], None, 1.)
    return np.concatenate(([0.], fprs, [1.])), np.concatenate(([0.], pros, [1.]))


def trapezoid(x, y, x_max):  # official generic_util.trapezoid
    x, y = np.array(x), np.array(y)
    correction = 0.
    if x_max not in x:
        ins = bisect(x, x_max)
        y_interp = y[ins - 1] + ((y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1]))
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    mask = x <= x_max
    x, y = x[mask], y[mask]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


rng = np.random.default_rng(2026)
out = {"sklearn_version": sklearn.__version__, "image_cases": [], "pixel_cases": []}
for n, decimals in [(50, 1), (200, 2), (31, 0), (400, 3)]:
    y = (rng.random(n) < 0.35).astype(int)
    y[0], y[1] = 0, 1
    s = np.round(rng.normal(size=n) + 1.2 * y, decimals).astype(np.float32)
    out["image_cases"].append({"scores": s.tolist(), "labels": y.tolist(), "auroc": roc_auc_score(y, s),
                               "ap": average_precision_score(y, s), "f1_max": f1_max(y, s)})
for case in range(3):
    maps, masks = [], []
    for i in range(5):
        m = np.zeros((16, 16), dtype=np.uint8)
        if i % 2 == 1:  # anomalous image: a few rectangles, one pair touching only diagonally
            for _ in range(1 + case):
                r, c = rng.integers(0, 12, 2)
                m[r:r + rng.integers(1, 4), c:c + rng.integers(1, 4)] = 1
            m[13, 13] = m[14, 14] = 1
        a = rng.normal(size=(16, 16)) + 1.5 * m
        a = np.round(a, 1 if case == 0 else 3).astype(np.float32)
        maps.append(a)
        masks.append(m)
    fprs, pros = compute_pro(maps, masks)
    flat_y = np.concatenate([m.ravel() for m in masks])
    flat_s = np.concatenate([a.ravel() for a in maps])
    out["pixel_cases"].append({"maps": [a.tolist() for a in maps], "masks": [m.tolist() for m in masks],
                               "pro_0.3": trapezoid(fprs, pros, 0.3) / 0.3, "pro_0.05": trapezoid(fprs, pros, 0.05) / 0.05,
                               "auroc": roc_auc_score(flat_y, flat_s), "ap": average_precision_score(flat_y, flat_s),
                               "f1_max": f1_max(flat_y, flat_s)})
with open("reference_metrics.json", "w") as f:
    json.dump(out, f)
print("wrote reference_metrics.json")
