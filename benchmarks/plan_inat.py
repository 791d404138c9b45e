"""The iNaturalist 2018 shape (437,513 training images x 8,142 classes) end to end on the host:
candidate generation, bit-packing for the input pipeline, and the confidence table of the model,
each stage's peak resident memory measured (not estimated).

    python benchmarks/plan_inat.py [--samples 437513] [--classes 8142] [--partial-rate 0.05]
                                   [--confidence-dtype float16]

Run it where the table fits: float16 needs ~7 GB for the table, float32 ~14 GB.
"""

import argparse
import resource
import time

import numpy as np


def peak_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=437_513)
    parser.add_argument("--classes", type=int, default=8_142)
    parser.add_argument("--partial-rate", type=float, default=0.05)
    parser.add_argument("--confidence-dtype", default="float16", choices=["float16", "float32"])
    args = parser.parse_args()

    import keras

    from ltpll.data.candidates import uniform_candidates
    from ltpll.data.pipeline import pack_candidates
    from ltpll.models.backbones import build_backbone
    from ltpll.models.pll_model import PLLModel

    n, c = args.samples, args.classes
    rows = [("start (Keras imported)", 0.0, 0.0, peak_gb())]
    labels = np.random.default_rng(0).integers(0, c, n)
    start = time.perf_counter()
    candidates = uniform_candidates(labels, c, args.partial_rate, seed=1, dtype=bool)
    rows.append(("candidate sets, bool [N, C]", candidates.nbytes / 2**30,
                 time.perf_counter() - start, peak_gb()))
    start = time.perf_counter()
    packed = pack_candidates(candidates)
    rows.append(("bit-packed for the pipeline", packed.nbytes / 2**30,
                 time.perf_counter() - start, peak_gb()))
    start = time.perf_counter()
    model = PLLModel(build_backbone("tiny", image_size=32), num_classes=c, num_samples=n,
                     image_shape=(32, 32, 3), confidence_dtype=args.confidence_dtype)
    model.set_candidates(candidates)
    table = n * c * np.dtype(args.confidence_dtype).itemsize / 2**30
    rows.append((f"confidence table, {args.confidence_dtype}, set from the sets", table,
                 time.perf_counter() - start, peak_gb()))
    first = keras.ops.convert_to_numpy(model.confidence[:1]).astype(np.float32)
    assert np.isclose(first.sum(), 1.0, atol=1e-2), first.sum()

    print(f"\nshape {n:,} x {c:,}, q={args.partial_rate}, mean set size "
          f"{candidates[:10000].sum(1).mean():.1f}; backend {keras.backend.backend()}\n")
    print("| stage | array | seconds | peak RSS so far |")
    print("|---|---|---|---|")
    for name, size, seconds, peak in rows:
        print(f"| {name} | {size:.2f} GiB | {seconds:.1f} | {peak:.2f} GiB |")


if __name__ == "__main__":
    main()
