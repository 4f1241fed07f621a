"""Which ``tf.distribute`` strategy trains the networks: ``kerasmyelin train --strategy``.

- ``default``: ``model.fit`` in this process (no strategy object: None).
- ``mirrored``: ``tf.distribute.MirroredStrategy`` over this machine's devices.
- ``multiworker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over several processes or
  machines, each told by the ``TF_CONFIG`` environment variable where the others are and which one
  it is (docs/cluster.md). It must be created before TensorFlow runs anything: it configures
  TensorFlow's collective ops, which is only possible at start-up.

The strategy is a run-time choice, not part of the experiment: a run folder trained under one can
be resumed under another. Under ``multiworker`` the chief (task ``chief``, or ``worker`` 0 where
the cluster has no chief) writes the run folder; the other workers read it (to resume) and write
nothing (``is_writer``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass

from kerasmyelin.errors import ConfigError, TrainingError

STRATEGIES = ("default", "mirrored", "multiworker")
TF_CONFIG = "TF_CONFIG"
JOBS = ("chief", "worker")  # what MultiWorkerMirroredStrategy trains with
EXAMPLE = ('{"cluster": {"worker": ["node1:12345", "node2:12345"]}, '
           '"task": {"type": "worker", "index": 0}}')
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterTask:
    """This process's place in a ``TF_CONFIG`` cluster.

    Attributes:
        type: "chief" or "worker".
        index: position in the cluster's list of that job.
        address: this task's "host:port".
        workers: tasks in the cluster (chief included), each one replica on a CPU machine.
        is_chief: whether this task writes the run folder.
    """

    type: str
    index: int
    address: str
    workers: int
    is_chief: bool


def _is_address(value) -> bool:
    """A "host:port" string (IPv6 hosts in brackets)."""
    if not isinstance(value, str) or ":" not in value:
        return False
    host, port = value.rsplit(":", 1)
    return bool(host.strip()) and port.isdigit() and 0 < int(port) < 65536


def read_tf_config(environ=None) -> ClusterTask:
    """The cluster and this task from ``TF_CONFIG``, checked the way MultiWorkerMirroredStrategy
    uses them.

    Args:
        environ: the environment to read (default ``os.environ``).

    Raises:
        ConfigError: ``TF_CONFIG`` is absent, not JSON, or does not describe a cluster of
            ``worker`` (and at most one ``chief``) tasks with this task in it.
    """
    text = (os.environ if environ is None else environ).get(TF_CONFIG, "")
    hint = f"e.g. {TF_CONFIG}='{EXAMPLE}' (docs/cluster.md)"
    if not text.strip():
        raise ConfigError(f"--strategy multiworker needs the {TF_CONFIG} environment variable (the cluster's "
                          f"addresses and this worker's place in it), and it is not set; {hint}")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{TF_CONFIG} is not valid JSON ({exc}); {hint}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{TF_CONFIG} must be a JSON object with 'cluster' and 'task', "
                          f"got a {type(value).__name__}; {hint}")
    cluster, task = value.get("cluster"), value.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ConfigError(f"{TF_CONFIG} has no 'cluster' object (job name -> list of 'host:port'); {hint}")
    for job, addresses in cluster.items():
        if job not in JOBS:
            raise ConfigError(f"{TF_CONFIG}: cluster job {job!r} is not supported; multi-worker training "
                              f"uses 'worker' tasks and at most one 'chief'")
        if not (isinstance(addresses, list) and addresses and all(_is_address(a) for a in addresses)):
            raise ConfigError(f"{TF_CONFIG}: cluster.{job} must be a non-empty list of 'host:port' strings, "
                              f"got {addresses!r}")
    if len(cluster.get("chief", [])) > 1:
        raise ConfigError(f"{TF_CONFIG}: the cluster has {len(cluster['chief'])} chiefs; at most one")
    everyone = [a for job in cluster.values() for a in job]
    repeated = sorted({a for a in everyone if everyone.count(a) > 1})
    if repeated:
        raise ConfigError(f"{TF_CONFIG}: address {repeated[0]} is given to more than one task")
    if not isinstance(task, dict):
        raise ConfigError(f"{TF_CONFIG} has no 'task' object saying which task this process is, "
                          f"e.g. \"task\": {{\"type\": \"worker\", \"index\": 1}}")
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster:
        raise ConfigError(f"{TF_CONFIG}: task.type {kind!r} is not a job of the cluster "
                          f"({', '.join(sorted(cluster))})")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[kind]):
        raise ConfigError(f"{TF_CONFIG}: task.index {index!r} is not a position in cluster.{kind} "
                          f"(0 to {len(cluster[kind]) - 1})")
    chief = kind == "chief" or ("chief" not in cluster and index == 0)
    return ClusterTask(kind, index, cluster[kind][index], len(everyone), chief)


def make_strategy(kind: str):
    """The strategy ``--strategy kind`` asks for; call it before TensorFlow runs anything.

    Returns:
        None for "default" (``model.fit`` without a strategy), else a ``tf.distribute.Strategy``.

    Raises:
        ConfigError: an unknown kind, or a bad ``TF_CONFIG`` for "multiworker".
        TrainingError: "multiworker" asked for after TensorFlow has started.
    """
    if kind not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {kind!r}")
    if kind == "multiworker":
        task = read_tf_config()  # before TensorFlow starts: a bad TF_CONFIG fails at once
    elif os.environ.get(TF_CONFIG, "").strip():
        log.warning("%s is set but --strategy %s trains in this process alone; use --strategy "
                    "multiworker to train with the cluster it describes", TF_CONFIG, kind)
    if kind == "default":
        return None
    import tensorflow as tf

    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    log.info("task %s %d of a %d-task cluster at %s%s", task.type, task.index, task.workers, task.address,
             " (the chief: writes the run folder)" if task.is_chief else "")
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as exc:
        raise TrainingError(f"multi-worker training must be set up before TensorFlow runs anything in "
                            f"this process ({exc}); start a new process") from None


def is_writer(strategy) -> bool:
    """Whether this process writes the run folder: always without a strategy or under
    ``mirrored``; under ``multiworker`` only the chief (TensorFlow's ``should_checkpoint``)."""
    return strategy is None or bool(strategy.extended.should_checkpoint)


def scope(strategy):
    """``strategy.scope()`` (variables made in it are mirrored), or no context for the default path."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def barrier(strategy) -> None:
    """Wait until every worker of a multi-worker strategy gets here (a one-number all-reduce)."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return  # one process: nothing to wait for

    @tf.function  # run eagerly, TensorFlow warns of the overhead
    def everyone():
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)

    everyone()


def chief_first(strategy, action):
    """``action()`` on the chief, then on the other workers: what it writes (a new run folder's
    config, data fingerprint and splits) is there when they read it.

    The chief lets the others go on even when ``action`` fails, so they fail on their own with
    the same message instead of waiting for it.
    """
    if is_writer(strategy):
        try:
            return action()
        finally:
            barrier(strategy)
    barrier(strategy)
    return action()


def lost_worker_errors() -> tuple[type, ...]:
    """TensorFlow's errors when a collective cannot complete because another worker is gone."""
    import tensorflow as tf

    return (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.DeadlineExceededError)
