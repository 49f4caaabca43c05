#!/usr/bin/env python3
"""What a calibration's thresholds do on labelled scores: per class, the false alarms and the misses.

    scripts/calibration_tradeoff.py SCORES_CSV CALIBRATION.json [CALIBRATION.json ...]

SCORES_CSV is eval's scores.csv (class,defect,id,score; defect "good" = normal). For each calibration
file and class: its method (f1-max or false-alarm with its target), the threshold, and on the scored
images the false-alarm rate (normal images at or above it) and the miss rate (anomalous images below
it). `infer --calibration` labels the same images identically (tests/app/test_demo.cpp).
Standard library only.
"""
import csv
import json
import struct
import sys


def as_float32(x):
    # The metrics and infer compare float32 scores and thresholds.
    return struct.unpack("f", struct.pack("f", x))[0]


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    scores = {}
    with open(argv[1], newline="") as f:
        for row in csv.DictReader(f):
            scores.setdefault(row["class"], []).append((row["defect"] != "good", as_float32(float(row["score"]))))
    print("| calibration | class | method | threshold | false alarms | misses |")
    print("|---|---|---|---|---|---|")
    for path in argv[2:]:
        with open(path) as f:
            calibration = json.load(f)
        for cls, entry in sorted(calibration["classes"].items()):
            if cls not in scores:
                continue
            t = as_float32(entry["image"]["threshold"])
            normal = [s for bad, s in scores[cls] if not bad]
            bad = [s for is_bad, s in scores[cls] if is_bad]
            alarms = sum(s >= t for s in normal)
            misses = sum(s < t for s in bad)
            method = entry["method"]
            if method == "false-alarm":
                method += " %.0f %% (%d normal images)" % (100 * entry["max_false_alarm"], entry["normal_images"])
            print("| %s | %s | %s | %.4g | %d/%d (%.0f %%) | %d/%d (%.0f %%) |" % (
                path, cls, method, t, alarms, len(normal), 100.0 * alarms / max(1, len(normal)),
                misses, len(bad), 100.0 * misses / max(1, len(bad))))


if __name__ == "__main__":
    main(sys.argv)
