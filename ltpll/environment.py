"""What this machine has and runs fastest (TensorFlow or not, XLA or a graph, oneDNN kernels),
and TensorFlow's start-up chatter kept quiet.

Keras-free and TensorFlow-free, so the CLI can decide both before anything heavy is imported.
"""

import contextlib
import importlib.util
import os
import platform
import re
import sys
import tempfile


def xla_is_faster():
    """Whether XLA-compiling the training step is the fast path on this machine.

    On a GPU it is. On a CPU a plain TensorFlow graph runs the convolutions faster (measured on
    2 cores: ResNet-18 1.45x, resnet-small 2.4x, ResNet-50 at 224 px 2.7x), so XLA is not the
    default there. JAX always jit-compiles: without ``jit`` it would run op by op. Imports the
    backend; call it when a model is compiled.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        return True
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return False


def cpu_has_native_bf16(cpuinfo_path="/proc/cpuinfo"):
    """Whether this CPU multiplies bfloat16 in hardware (x86 AVX512-BF16 or AMX-BF16), read from
    ``/proc/cpuinfo``; False where that file is missing (macOS, Windows) or says nothing."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.partition(":")[2].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def fastest_precision():
    """The dtype policy ``--precision auto`` stands for on this machine.

    ``mixed_bfloat16`` when the step runs on a CPU with native bf16 (AVX512-BF16, AMX), under
    TensorFlow or JAX. On a 2-core AMD EPYC with AVX512-BF16 (``ltpll bench-step``, medians):
    TensorFlow's ResNet-18 step at batch 64 took 0.90 s against 1.08 s in float32, resnet-small
    at batch 128 110 against 137 ms; JAX's resnet-small step 225 against 265 ms. Short
    CIFAR-10-LT runs reached the same accuracy (README, Speed). Variables, the confidence table,
    the RECORDS state and the logits stay float32. Everywhere else float32: on a CPU without
    native bf16 it is emulated and several times slower; on a GPU it has not been measured
    here, so ``--precision mixed_bfloat16`` is the user's explicit choice there. Imports the
    backend; call it when a model is built.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        on_cpu = not tf.config.list_physical_devices("GPU")
    elif backend == "jax":
        on_cpu = jax_runs_on_cpu()
    else:
        return "float32"
    return "mixed_bfloat16" if on_cpu and cpu_has_native_bf16() else "float32"


def jax_runs_on_cpu():
    """Whether JAX's default device is the CPU (no GPU or TPU plugin found). Imports JAX."""
    import jax

    return jax.default_backend() == "cpu"


def prefer_onednn():
    """Asks TensorFlow for its oneDNN CPU kernels on x86, unless ``TF_ENABLE_ONEDNN_OPTS`` is set.

    TensorFlow turns oneDNN on by itself only on x86 CPUs with AVX512-VNNI, AVX512-BF16 or AMX;
    elsewhere (an AVX2-only AMD EPYC, most laptops) it falls back to Eigen's convolutions. On a
    2-core AVX2 EPYC the full ResNet-18 step at batch 64 took 3.63 s with oneDNN and 5.92 s
    without (``ltpll bench-step``), the difference between being slower and faster than the
    authors' PyTorch code, which uses oneDNN everywhere. Only an environment variable read when
    TensorFlow is imported, so it must run first; ``import ltpll`` calls it.
    ``TF_ENABLE_ONEDNN_OPTS=0`` keeps TensorFlow's own choice.
    """
    if platform.machine().lower() in ("x86_64", "amd64", "x86", "i686"):
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def tensorflow_available():
    """True when TensorFlow is installed (tf.data, SavedModel export, distribution)."""
    return importlib.util.find_spec("tensorflow") is not None


# TensorFlow's C++ start-up lines that say nothing to a user: CPU-only machines report the
# missing CUDA driver ("E0000 ... failed call to cuInit"), and the lines before absl's logging
# is set up ignore TF_CPP_MIN_LOG_LEVEL.
_NOISE = re.compile(
    r"(^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$)"
    r"|(^[IWE]\d{4} [\d:.]+\s+\d+ \S+\.(cc|h):\d+\] )"
    # The second line of "This TensorFlow binary is optimized to use available CPU
    # instructions...".
    r"|(^To enable the following instructions: .* rebuild TensorFlow with the appropriate "
    r"compiler flags\.$)"
)


def quiet_tensorflow(verbose=False):
    """Hides TensorFlow's and XLA's C++ log lines below errors, unless ``verbose`` or the user set
    ``TF_CPP_MIN_LOG_LEVEL`` themselves. Call before TensorFlow is imported."""
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


@contextlib.contextmanager
def filtered_stderr(enabled=True):
    """Runs the block with file descriptor 2 captured, then writes back every line that is not
    C++ log chatter (:data:`_NOISE`), in order. Meant for ``import tensorflow``, whose shared
    libraries log before TF_CPP_MIN_LOG_LEVEL is read; Python warnings written meanwhile come
    back after the block.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines()
                    if not _NOISE.search(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()
