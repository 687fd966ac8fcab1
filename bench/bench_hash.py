"""NumPy version of bench/bench_hash.c: the same codes (read from the file bench_hash writes),
ranked by Hamming distance with ties by database index (a stable argsort), mAP at R = all.
Usage: build/<dir>/bench_hash /tmp/hash.bin && python3 bench/bench_hash.py /tmp/hash.bin"""
import sys
import time

import numpy as np


def load(path):
    with open(path, "rb") as f:
        nq, ndb, nbits = np.fromfile(f, dtype="<i8", count=3)
        qb = np.fromfile(f, dtype=np.uint8, count=nq * nbits).reshape(nq, nbits)
        db = np.fromfile(f, dtype=np.uint8, count=ndb * nbits).reshape(ndb, nbits)
        ql = np.fromfile(f, dtype="<i4", count=nq)
        dl = np.fromfile(f, dtype="<i4", count=ndb)
    return qb, db, ql, dl


def map_hamming(qb, db, ql, dl, chunk=100):
    """mAP@all: Hamming distance from a +-1 matrix product, stable argsort (ties by index)."""
    nbits = qb.shape[1]
    qs = (2.0 * qb - 1.0).astype(np.float32)
    ds = (2.0 * db - 1.0).astype(np.float32)
    ranks = np.arange(1, db.shape[0] + 1, dtype=np.float64)
    total = 0.0
    for i in range(0, qb.shape[0], chunk):
        dist = ((nbits - qs[i:i + chunk] @ ds.T) / 2).astype(np.uint8)  # exact: integers
        order = np.argsort(dist, axis=1, kind="stable")
        rel = dl[order] == ql[i:i + chunk, None]
        hits = np.cumsum(rel, axis=1)
        nrel = rel.sum(axis=1)
        ap = (hits / ranks * rel).sum(axis=1) / np.maximum(nrel, 1)
        total += ap.sum()
    return total / qb.shape[0]


def main():
    qb, db, ql, dl = load(sys.argv[1] if len(sys.argv) > 1 else "/tmp/hash.bin")
    t0 = time.perf_counter()
    m = map_hamming(qb, db, ql, dl)
    t = time.perf_counter() - t0
    print(f"numpy {np.__version__}: {qb.shape[0]} queries x {db.shape[0]} database codes, "
          f"{qb.shape[1]} bits")
    print(f"mAP@all {m:.10f}  seconds {t:.3f}")


if __name__ == "__main__":
    main()
