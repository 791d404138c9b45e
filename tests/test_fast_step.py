"""The speed options: mixed precision, steps_per_execution, and `ltpll bench-step`."""

import json

import keras
import numpy as np
from click.testing import CliRunner

from ltpll.cli.main import main
from ltpll.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from ltpll.training import train
from tests.helpers import run_python


def _config(folder, output, **train_options):
    return RunConfig(
        data=DataConfig(dataset=folder, imbalance_ratio=2.0, partial_rate=0.3),
        model=ModelConfig(backbone="tiny", rebalancer="records"),
        train=TrainConfig(epochs=2, batch_size=8, lr=0.05, eval_every=2, seed=4,
                          **train_options),
        output=str(output),
    )


def _weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.variables]


def test_steps_per_execution_does_not_change_the_result(image_folder, tmp_path):
    one, _ = train(_config(image_folder, tmp_path / "one"), log=lambda *_: None)
    three, _ = train(_config(image_folder, tmp_path / "three", steps_per_execution=3),
                     log=lambda *_: None)
    for a, b in zip(_weights(one), _weights(three), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_mixed_bfloat16_keeps_state_and_logits_in_float32(image_folder, tmp_path, monkeypatch):
    # Reached through --precision auto, as on a CPU with native bf16.
    from ltpll import assembly

    monkeypatch.setattr(assembly, "fastest_precision", lambda: "mixed_bfloat16")
    lines = []
    model, final = train(_config(image_folder, tmp_path / "bf16"), log=lines.append)
    assert "precision: mixed_bfloat16 (native bf16 here;" in "\n".join(lines)
    conv = next(layer for layer in model.backbone.layers if "conv" in layer.name)
    assert conv.dtype_policy.name == "mixed_bfloat16" and conv.compute_dtype == "bfloat16"
    assert model.confidence.dtype == "float32"
    assert model.rebalancer.feature_mean.dtype == "float32"
    images = np.zeros((2, 16, 16, 3), np.uint8)
    assert keras.ops.convert_to_numpy(model(images)).dtype == np.float32
    assert np.isfinite(final["top1"])
    # The policy applied to this model only: the process-wide default is back to float32.
    assert keras.mixed_precision.global_policy().name == "float32"


def test_bench_step_reports_both_steps_and_their_ratio():
    result = CliRunner().invoke(main, ["bench-step", "--backbone", "tiny", "--batch-size", "8",
                                       "--steps", "2", "--warmup", "1", "--repeats", "3",
                                       "--image-size", "16", "--json"])
    assert result.exit_code == 0, result.output
    measured = json.loads(result.output[result.output.index("{"):])
    for step in ("full", "bare"):
        timing = measured[step]
        assert len(timing["ms_per_step"]) == 3 and timing["min"] > 0
        assert timing["min"] <= timing["median"] <= timing["max"]
        # B = 8 training images and 16 views a step, at the median step time.
        assert np.isclose(timing["images_per_s"], 8 * 1000.0 / timing["median"])
        assert np.isclose(timing["views_per_s"], 2 * timing["images_per_s"])
        # The windows leave out the warm-up (and compilation) that the whole fit includes.
        assert timing["fit_s"] > sum(timing["ms_per_step"]) * 2 / 1000.0
    # The overhead pairs the full and the bare window of each round.
    paired = np.array(measured["full"]["ms_per_step"]) / np.array(measured["bare"]["ms_per_step"])
    np.testing.assert_allclose(measured["paired_ratios"], paired)
    assert np.isclose(measured["overhead_ratio"], np.median(paired))


def test_bench_step_alternates_the_full_and_the_bare_window(monkeypatch):
    """Round by round, full then bare, each in its own fit; only the first round compiles."""
    from ltpll.benchmark import step

    calls = []

    def fake_fit_windows(model, data, steps, warmup, repeats):
        calls.append((model, warmup, repeats))
        return [len(calls) * 0.1], 1.0

    monkeypatch.setattr(step, "_fit_windows", fake_fit_windows)
    runs = {"full": ("F", None), "bare": ("B", None)}
    windows, fit_seconds = step._time_alternating(runs, steps=4, warmup=3, rewarm=1, repeats=3)
    assert calls == [("F", 3, 1), ("B", 3, 1), ("F", 1, 1), ("B", 1, 1), ("F", 1, 1), ("B", 1, 1)]
    np.testing.assert_allclose(windows["full"], [0.1, 0.3, 0.5])
    np.testing.assert_allclose(windows["bare"], [0.2, 0.4, 0.6])
    assert fit_seconds == {"full": 3.0, "bare": 3.0}


def test_bench_step_times_whole_executions_of_several_steps():
    # Keras runs the callbacks once per execution: 3 steps and 1 warm-up become 4 and 2.
    result = CliRunner().invoke(main, ["bench-step", "--backbone", "tiny", "--batch-size", "8",
                                       "--steps", "3", "--warmup", "1", "--repeats", "2",
                                       "--steps-per-execution", "2", "--image-size", "16",
                                       "--json"])
    assert result.exit_code == 0, result.output
    measured = json.loads(result.output[result.output.index("{"):])
    assert (measured["steps"], measured["warmup"], measured["steps_per_execution"]) == (4, 2, 2)
    for step in ("full", "bare"):
        assert len(measured[step]["ms_per_step"]) == 2 and measured[step]["min"] > 0


def test_bench_step_runs_under_jax_without_tensorflow():
    """The GPU machine has JAX and no TensorFlow: the numpy batches must last every fit."""
    script = (
        "import json, sys; sys.modules['tensorflow'] = None\n"
        "from ltpll.benchmark.step import bench_step\n"
        "r = bench_step(backbone='tiny', batch_size=4, steps=3, warmup=2, repeats=2,\n"
        "               image_size=8, precision='float32')\n"
        "print(json.dumps([len(r['full']['ms_per_step']), len(r['paired_ratios'])]))\n"
    )
    assert json.loads(run_python(script, "jax").strip().splitlines()[-1]) == [2, 2]


def test_bench_step_rejects_bad_numbers():
    result = CliRunner().invoke(main, ["bench-step", "--steps", "0"])
    assert result.exit_code == 2 and "--steps must be >= 1" in result.output


def test_no_jit_runs_the_same_step_as_a_plain_graph(image_folder, tmp_path):
    # TensorFlow's stateless random ops draw other numbers under XLA than as graph kernels, so
    # the augmentations (and hence the runs) differ; each mode is deterministic on its own.
    first, _ = train(_config(image_folder, tmp_path / "a", jit_compile=False), log=lambda *_: None)
    again, final = train(_config(image_folder, tmp_path / "b", jit_compile=False),
                         log=lambda *_: None)
    assert not first.jit_compile and np.isfinite(final["top1"])
    for a, b in zip(_weights(first), _weights(again), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_default_compilation_is_the_fast_path_of_the_machine(monkeypatch):
    import tensorflow as tf

    from ltpll import environment
    from ltpll.assembly import describe_step, use_jit
    from ltpll.config import TrainConfig

    cpu_only = not tf.config.list_physical_devices("GPU")
    assert use_jit(TrainConfig()) is (not cpu_only)
    assert use_jit(TrainConfig(jit_compile=True)) and not use_jit(TrainConfig(jit_compile=False))
    assert not use_jit(TrainConfig(jit_compile=True, distribute="mirrored"))
    if cpu_only:
        assert describe_step(TrainConfig()) == (
            "training step: TensorFlow graph, no XLA (faster on a CPU; --jit for XLA)")
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["GPU:0"] if kind == "GPU" else [])
    assert use_jit(TrainConfig())  # a GPU: XLA
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    assert environment.xla_is_faster()  # JAX always jits
    # JAX on a CPU where TensorFlow is installed: say that TensorFlow is the faster backend.
    for on_cpu, has_tf, hint in [(True, True, True), (True, False, False), (False, True, False)]:
        monkeypatch.setattr(environment, "jax_runs_on_cpu", lambda on_cpu=on_cpu: on_cpu)
        monkeypatch.setattr(environment, "tensorflow_available", lambda has_tf=has_tf: has_tf)
        line = describe_step(TrainConfig())
        assert line.startswith("training step: jax.jit") and len(line) <= 80
        assert ("KERAS_BACKEND=tensorflow" in line) is hint


def test_auto_precision_is_bfloat16_only_on_a_cpu_with_native_bf16(
        monkeypatch, tmp_path, float32_unless_asked):
    import tensorflow as tf

    from ltpll import environment
    from ltpll.assembly import describe_precision, use_precision
    from ltpll.config import TrainConfig

    with_bf16, without = tmp_path / "zen4", tmp_path / "zen2"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    native_bf16 = float32_unless_asked   # the real probe (conftest pins it to False)
    assert native_bf16(str(with_bf16))
    assert not native_bf16(str(without))
    assert not native_bf16(str(tmp_path / "no-such-file"))

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(environment, "cpu_has_native_bf16", lambda: True)
    assert environment.fastest_precision() == "mixed_bfloat16"
    assert use_precision(TrainConfig()) == "mixed_bfloat16"
    assert use_precision(TrainConfig(precision="float32")) == "float32"
    assert describe_precision(TrainConfig(precision="float32")) == "precision: float32"
    monkeypatch.setattr(environment, "cpu_has_native_bf16", lambda: False)
    assert use_precision(TrainConfig()) == "float32"
    assert describe_precision(TrainConfig()) == "precision: float32"
    monkeypatch.setattr(environment, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["GPU:0"] if kind == "GPU" else [])
    assert environment.fastest_precision() == "float32"  # a GPU: not measured, float32
    import jax

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert environment.fastest_precision() == "mixed_bfloat16"  # JAX on that CPU too
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert environment.fastest_precision() == "float32"
