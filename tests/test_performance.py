"""The fast training path computes the paper's function: CPU settings, fused Adam, FLOP counts,
the protocol's workload, graph-mode prediction."""

import os
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kerasmyelin import runtime  # noqa: E402
from kerasmyelin.models.flops import network_flops  # noqa: E402
from kerasmyelin.models.myelin_cnn import ModelConfig, build_myelin_cnn  # noqa: E402
from kerasmyelin.training.config import load_experiment  # noqa: E402
from kerasmyelin.training.optimizer import FusedAdam  # noqa: E402
from kerasmyelin.training.protocol import experiment_workload  # noqa: E402
from tests.conftest import REPO  # noqa: E402


def test_fast_settings_depend_on_the_machine_and_never_override_the_user():
    assert runtime.fast_cpu_settings(2) == {"TF_ENABLE_ONEDNN_OPTS": "1", "TF_NUM_INTRAOP_THREADS": "1",
                                            "TF_NUM_INTEROP_THREADS": "2"}
    assert runtime.fast_cpu_settings(32) == {"TF_ENABLE_ONEDNN_OPTS": "1"}
    code = ("import os; os.environ['TF_ENABLE_ONEDNN_OPTS'] = '0'; import kerasmyelin; "
            "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], 'TF_NUM_INTEROP_THREADS' in os.environ)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    assert out.stdout.split() == ["0", str(runtime.cpu_count() <= runtime.SMALL_MACHINE_CORES)]


def test_settings_are_not_applied_once_tensorflow_runs():
    import tensorflow  # noqa: F401

    environ = {}
    assert runtime.apply_fast_cpu_settings(environ) == {} and environ == {}
    assert set(runtime.state()) == {"cores", "onednn", "intra_op_threads", "inter_op_threads"}


def test_flops_of_the_papers_network_are_pinned():
    flops = network_flops(build_myelin_cnn())
    # conv1 10x(2*124*124*16*25), conv2 10x(2*58*58*8*400), dense 10x(2*6728*100) + the joint layers.
    assert flops.forward == 352_102_550
    # Weight and input gradients cost a forward pass each, except the input gradient of conv1.
    assert flops.training == 3 * 352_102_550 - 10 * 2 * 124 * 124 * 16 * 25
    small = network_flops(build_myelin_cnn(ModelConfig(image_size=32)))
    assert small.forward < flops.forward / 10 and small.backward > small.forward


def test_fused_adam_follows_keras_adam():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    start = [rng.normal(size=s).astype(np.float32) for s in ((40, 7), (7,), (3, 3, 2, 4))]
    grads = [[tf.constant(rng.normal(size=w.shape).astype(np.float32)) for w in start] for _ in range(20)]
    finals = []
    for cls in (keras.optimizers.Adam, FusedAdam):
        variables = [keras.Variable(w) for w in start]
        opt = cls(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
        opt.build(variables)

        @tf.function
        def step(g):
            opt.apply_gradients(zip(g, variables))  # noqa: B023 (called within this iteration)

        for g in grads:
            step(g)
        # The fused class really runs TensorFlow's one-pass kernel (and Keras' does not).
        ops = {op.type for op in step.get_concrete_function(grads[0]).graph.get_operations()}
        assert ("ResourceApplyAdam" in ops) == (cls is FusedAdam), sorted(ops)
        finals.append([v.numpy() for v in variables])
        assert int(opt.iterations.numpy()) == 20
    for keras_w, fused_w, w0 in zip(*finals, start):
        assert np.abs(fused_w - w0).max() > 1e-3  # the weights did move
        np.testing.assert_allclose(fused_w, keras_w, rtol=0, atol=1e-6)
    assert FusedAdam.from_config(FusedAdam(epsilon=1e-8).get_config()).epsilon == 1e-8


@pytest.mark.slow  # two paper-size networks in fresh processes: ~40 s
def test_fast_kernels_give_the_plain_graphs_outputs_gradients_and_updates(tmp_path):
    """Same weights and inputs: oneDNN + fused Adam against TensorFlow's Eigen kernels + Keras Adam.

    Tolerances: outputs 1e-4 relative; each gradient within 1e-4 of its largest entry (summation
    order differs). After three Adam steps: Adam divides by the root of the squared gradient, so a
    weight whose gradient is near zero can move anywhere within its step bound (learning rate per
    step) on round-off alone; all weights stay within that bound and 99.9% within 1e-6.
    """
    runs = {}
    for name, onednn, opt in (("plain", "0", "keras"), ("fast", "1", "fused")):
        env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
        env.update(TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
        out = tmp_path / f"{name}.npz"
        subprocess.run([sys.executable, str(REPO / "tests" / "equivalence_worker.py"), str(out), opt],
                       env=env, cwd=REPO, check=True, capture_output=True)
        runs[name] = dict(np.load(out))
    plain, fast = runs["plain"], runs["fast"]
    assert plain.keys() == fast.keys()
    np.testing.assert_allclose(fast["pred"], plain["pred"], rtol=1e-4)
    grads = [k for k in plain if k.startswith("grad_")]
    assert len(grads) == len(build_myelin_cnn().trainable_variables)
    for k in grads:
        scale = max(np.abs(plain[k]).max(), 1e-12)
        assert np.abs(fast[k] - plain[k]).max() <= 1e-4 * scale, k
    diffs = np.concatenate([np.abs(fast[k] - plain[k]).ravel() for k in plain if k.startswith("weight_")])
    assert diffs.size == build_myelin_cnn().count_params()
    assert diffs.max() <= 3 * 1e-3
    assert np.mean(diffs > 1e-6) < 1e-3


def test_protocol_workload_counts_full_batches_per_epoch():
    config = load_experiment(REPO / "experiments" / "paper_ensemble.yaml", ["train.epochs=3", "train.batch_size=4"])
    ids = [f"sub-{i:02d}" for i in range(40)]
    ages = np.linspace(-1, 24, 40)
    work = experiment_workload(config, ids, ages)
    assert work.networks == 8  # 4 folds x 2 members
    assert work.train_samples % (4 * 3) == 0
    simple = experiment_workload(load_experiment(None, ["train.epochs=3", "train.batch_size=4"]), ids, ages)
    assert simple.networks == 4
    # 30 training infants per fold, 15% of them held out for validation: 26 train -> 7 batches of 4.
    assert simple.train_samples == 4 * 7 * 4 * 3 and simple.validation_samples == 4 * 4 * 3
    assert (simple + work).networks == 12


def test_graph_prediction_equals_the_eager_model_with_a_partial_last_batch():
    from kerasmyelin.data.cache import TenSliceSet
    from kerasmyelin.levels import INPUT_NAMES
    from kerasmyelin.training.experiment import predict_ages

    rng = np.random.default_rng(3)
    data = TenSliceSet(images={n: rng.random((7, 32, 32), dtype=np.float32) for n in INPUT_NAMES},
                       participant_id=np.array([f"sub-{i}" for i in range(7)]),
                       age_months=np.zeros(7, np.float32), manifest={})
    model = build_myelin_cnn(ModelConfig(image_size=32))
    idx = np.array([6, 0, 3, 5, 1])
    got = predict_ages(model, data, idx, batch_size=2)
    want = np.asarray(model({n: data.images[n][idx][..., None] for n in INPUT_NAMES})).ravel()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert predict_ages(model, data, [], batch_size=2).shape == (0,)


def test_cli_start_up_hides_tensorflows_notices_but_not_real_errors(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    out = subprocess.run([sys.executable, "-m", "kerasmyelin.cli.main", "predict", "--model", str(tmp_path / "none"),
                          "--data", str(tmp_path)], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 2
    assert "oneDNN" not in out.stderr and "absl" not in out.stderr
    assert "error" in out.stderr and str(tmp_path / "none") in out.stderr


def test_prediction_graph_cache_lets_models_go():
    import gc
    import weakref

    from kerasmyelin.data.cache import TenSliceSet
    from kerasmyelin.levels import INPUT_NAMES
    from kerasmyelin.models import graph
    from kerasmyelin.training import experiment

    data = TenSliceSet(images={n: np.zeros((2, 32, 32), np.float32) for n in INPUT_NAMES},
                       participant_id=np.array(["a", "b"]), age_months=np.zeros(2, np.float32), manifest={})
    model = build_myelin_cnn(ModelConfig(image_size=32))
    experiment.predict_ages(model, data, [0, 1])
    assert graph.is_traced(model)
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


def test_doctor_reports_versions_settings_and_devices(capsys):
    from kerasmyelin.cli.main import main

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "keras " in out and "oneDNN kernels" in out and "TensorFlow devices" in out
    expected = "on" if runtime.state()["onednn"] else "off"
    assert any(line.startswith("oneDNN kernels") and line.split()[-1] == expected for line in out.splitlines())
