"""``--distribute multi-worker``: two worker processes on 127.0.0.1 under
MultiWorkerMirroredStrategy, each with its own TF_CONFIG.

The strategy is configured when a process starts, so every run is a fresh process; a run that does
not finish within TIMEOUT seconds is killed (all of its processes), so these tests never hang.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from click.testing import CliRunner

from ltpll.cli.main import main
from tests.helpers import REPO

pytest.importorskip("tensorflow")

TIMEOUT = 180


def free_ports(count):
    """Ports free on 127.0.0.1 right now (the OS picks them)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


def run_together(commands, log_dir):
    """Starts every ``(argv, extra_env)`` at once and waits for all of them.

    Returns ``[(returncode, output)]``. On timeout every process still running is killed and the
    test fails with the ends of the outputs.
    """
    base = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    base.update(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3",
                PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    paths = [os.path.join(log_dir, f"process-{i}.log") for i in range(len(commands))]
    processes = []
    try:
        for path, (argv, extra_env) in zip(paths, commands):
            with open(path, "w") as log:  # the child keeps its own copy of the descriptor
                processes.append(subprocess.Popen(argv, cwd=REPO, env={**base, **extra_env},
                                                  stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + TIMEOUT
        for process in processes:
            try:
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"processes still running after {TIMEOUT}s:\n"
                            + "\n".join(f"--- {path}:\n{_read(path)[-2000:]}" for path in paths))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [(process.returncode, _read(path)) for process, path in zip(processes, paths)]


def _read(path):
    with open(path) as handle:
        return handle.read()


def worker_env(ports, index, **extra):
    return {"TF_CONFIG": tf_config(ports, index), **extra}


# The library-level run: the real input pipeline (shuffled, sharded as ltpll.training does), the
# BN-free tiny backbone and identity augmentation, so the distributed step is comparable with a
# single-process run on the same global batches. argv: "multi-worker" or "none", output .npz.
TRAIN_SNIPPET = textwrap.dedent(r"""
    import contextlib, sys
    from ltpll.distribution import make_strategy
    strategy = make_strategy(sys.argv[1])  # first: before any other TensorFlow op
    import keras, numpy as np
    from ltpll.data.pipeline import steps_per_epoch, train_dataset
    from ltpll.distribution import shard_global_batches
    from ltpll.models.pll_model import UpdateStart
    from ltpll.callbacks import Records
    from tests.helpers import tiny_model, tiny_pll_arrays
    n, c, batch, epochs = 48, 5, 8, 2
    images, candidates, labels = tiny_pll_arrays(n, c, rate=0.5)
    keras.utils.set_random_seed(7)
    if sys.argv[3] == "stream":  # the same images as files, each worker decoding its part
        import os
        from PIL import Image
        from ltpll.data.files import ImageFiles
        from ltpll.data.pipeline import distributed_stream, stream_train_dataset
        folder = sys.argv[2] + "-files"
        os.makedirs(folder)
        for row, image in enumerate(images):
            Image.fromarray(image).save(os.path.join(folder, f"{row}.png"))
        files = ImageFiles([os.path.join(folder, f"{row}.png") for row in range(n)], 16, 16)
        if strategy is not None:
            dataset = distributed_stream(strategy, files, candidates, labels, batch, 5, epochs)
        else:
            dataset = stream_train_dataset(files, candidates, labels, batch, 5, epochs=epochs)
    else:
        dataset = train_dataset(images, candidates, labels, batch, seed=5, epochs=epochs)
        if strategy is not None:
            dataset = shard_global_batches(dataset)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        records = Records(0.9)
        model = tiny_model(images, candidates, rebalancer=records)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=False)
        history = model.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch(n, batch),
                            verbose=0, callbacks=[records, UpdateStart(0)])
    np.savez(sys.argv[2], table=keras.ops.convert_to_numpy(model.confidence),
             initial=candidates / candidates.sum(1, keepdims=True),
             feature_mean=keras.ops.convert_to_numpy(model.rebalancer.feature_mean),
             loss=np.array(history.history["loss"]),
             **{f"weight{i}": w for i, w in enumerate(model.get_weights())})
""")


@pytest.mark.parametrize("source", ["memory", "stream"])
def test_two_workers_agree_and_match_a_single_process(tmp_path, source):
    """In memory, every worker gathers the global batch and keeps its part; streamed from
    files, each worker decodes only its part: both must step like one process."""
    ports = free_ports(2)
    python = [sys.executable, "-c", TRAIN_SNIPPET]
    results = run_together([
        (python + ["multi-worker", str(tmp_path / "worker0.npz"), source], worker_env(ports, 0)),
        (python + ["multi-worker", str(tmp_path / "worker1.npz"), source], worker_env(ports, 1)),
        (python + ["none", str(tmp_path / "single.npz"), source], {}),
    ], tmp_path)
    for returncode, output in results:
        assert returncode == 0, output[-3000:]
    worker0, worker1, single = (np.load(tmp_path / f"{name}.npz")
                                for name in ("worker0", "worker1", "single"))
    assert worker0.files == single.files
    rows_moved = (np.abs(worker0["table"] - worker0["initial"]).max(axis=1) > 1e-6).sum()
    assert rows_moved > 40  # every sample was disambiguated, by one worker or the other
    for key in worker0.files:
        # The workers hold the same weights, confidence table and RECORDS mean...
        np.testing.assert_allclose(worker0[key], worker1[key], atol=1e-6, err_msg=key)
        # ...which are those of one process stepping through the same global batches.
        np.testing.assert_allclose(worker0[key], single[key], atol=1e-4, err_msg=key)


CLI_ARGS = ["--imbalance-ratio", "2", "--partial-rate", "0.3", "--backbone", "tiny",
            "--epochs", "2", "--batch-size", "8", "--lr", "0.05", "--seed", "5", "--records",
            "--eval-every", "1"]


def test_cli_two_workers_the_chief_writes_the_run(image_folder, tmp_path):
    from ltpll.training import evaluate

    ports = free_ports(2)
    run = str(tmp_path / "run")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    argv = [sys.executable, "-m", "ltpll.cli.main", "train", "--dataset", image_folder,
            "--distribute", "multi-worker", "--output", run, *CLI_ARGS]
    (code0, out0), (code1, out1) = run_together(
        [(argv, worker_env(ports, i, TMPDIR=str(scratch))) for i in range(2)], tmp_path)
    assert code0 == 0, out0[-3000:]
    assert code1 == 0, out1[-3000:]
    assert "not the chief" in out1 and "not the chief" not in out0
    for name in ("config.json", "model.keras", "metrics.json", "history.csv", "prior.json",
                 "class_counts.json", "candidates.csv"):
        assert os.path.exists(os.path.join(run, name)), name
    assert not os.path.exists(os.path.join(run, "checkpoint"))
    assert not [p for p in os.listdir(scratch) if p.startswith("ltpll-worker-")]
    with open(os.path.join(run, "history.csv")) as handle:
        assert len(handle.read().strip().splitlines()) == 1 + 2
    # The test metrics came from a prediction split over the two workers and gathered back;
    # reloading the model in this one process must give the same.
    trained = json.loads(_read(os.path.join(run, "metrics.json")))
    again = evaluate(run, output=str(tmp_path / "again.json"))
    assert again["per_class"] == trained["per_class"]
    assert again["top1"] == pytest.approx(trained["top1"])


def test_multi_worker_without_tf_config_is_a_one_line_error(image_folder, tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--dataset", image_folder, "--distribute",
                                       "multi-worker", "--output", str(run), *CLI_ARGS])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert "TF_CONFIG" in lines[-1] and "Traceback" not in result.output
    assert not run.exists()


@pytest.mark.parametrize("value, words", [
    ("{not json", "not valid JSON"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
     "task index"),
    ('{"cluster": {"ps": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]}, "task": {"type": "worker"}}',
     "'ps'"),
])
def test_invalid_tf_config_is_a_user_error(monkeypatch, value, words):
    from ltpll.distribution import multi_worker_task
    from ltpll.errors import LTPLLError

    monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(LTPLLError, match=words):
        multi_worker_task()


@pytest.mark.slow
def test_a_worker_that_dies_stops_the_other_with_one_line(image_folder, tmp_path):
    ports = free_ports(2)
    train = [sys.executable, "-m", "ltpll.cli.main", "train", "--dataset", image_folder,
             "--distribute", "multi-worker", "--output", str(tmp_path / "run"), *CLI_ARGS]
    joins_then_exits = [sys.executable, "-c",
                        "from ltpll.distribution import make_strategy; make_strategy('multi-worker')"]
    (code0, out0), (code1, _) = run_together(
        [(train, worker_env(ports, 0)), (joins_then_exits, worker_env(ports, 1))], tmp_path)
    assert code1 == 0
    assert code0 == 2, out0[-3000:]
    assert "another worker of the cluster stopped" in out0 and "Traceback" not in out0
