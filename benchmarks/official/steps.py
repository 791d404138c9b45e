"""Per-step times from batch-end clock readings, the same rule for both implementations.

Each side records ``(epoch, seconds)`` at the end of every training batch, after the batch's work
is done. A step's time is the wall clock between the ends of two consecutive batches, so it holds
everything the loop does per batch: waiting for the input, the forward and backward pass, the
optimizer and the bookkeeping. Two gaps are left out, on both sides alike:

* the first ``warmup`` batches of the run (graph tracing, allocator and worker start-up);
* a gap that spans an epoch boundary: it holds the epoch's end (ltpll's evaluation and
  checkpoint, a PyTorch ``DataLoader`` starting its workers again), which is not a step.

Plain Python, no Keras and no torch: both the ltpll venv and the torch venv import it.
"""

import statistics


def timed_batches(stamps, warmup, steps):
    """Indices ``k`` of the first ``steps`` timed batches: ``k >= warmup`` (and ``k >= 1``),
    with batch ``k - 1`` ended in the same epoch as batch ``k``.

    Args:
        stamps: ``(epoch, seconds)`` at the end of each batch, in order.
        warmup: batches at the start of the run that are not timed.
        steps: timed steps wanted.
    """
    chosen = [k for k in range(max(warmup, 1), len(stamps)) if stamps[k][0] == stamps[k - 1][0]]
    return chosen[:steps]


def step_intervals(stamps, warmup, steps):
    """Milliseconds of the first ``steps`` timed steps: ``1000 * (t[k] - t[k-1])`` for each
    batch ``k`` of :func:`timed_batches` (at most ``steps`` of them)."""
    return [1000.0 * (stamps[k][1] - stamps[k - 1][1])
            for k in timed_batches(stamps, warmup, steps)]


def batches_needed(warmup, steps, steps_per_epoch):
    """Batches a run must reach to yield ``steps`` timed steps (one gap lost per epoch end)."""
    if steps_per_epoch < 2:
        raise ValueError(f"one batch per epoch leaves no step to time; use more images or a "
                         f"smaller batch (steps per epoch: {steps_per_epoch})")
    batches = max(warmup, 1) + steps
    while len(step_intervals([(k // steps_per_epoch, float(k)) for k in range(batches)],
                             warmup, steps)) < steps:
        batches += 1
    return batches


def summary(ms, batch_size):
    """Median ms per step and images/s at it (an image is one training image, two views)."""
    median = statistics.median(ms)
    return {"ms_per_step": ms, "median_ms": median, "images_per_s": 1000.0 * batch_size / median}
