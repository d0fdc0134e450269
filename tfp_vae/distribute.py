"""tf.distribute for training: which strategy, which worker is the chief, where the others write.

    strategy = distribute.create_strategy(config.training)   # first TensorFlow work of the process
    with strategy.scope():
        model = build_model(config)                           # variables mirrored on every replica

Strategies (`TrainingConfig.strategy`, `--strategy`):
- `default`: TensorFlow's default strategy, one device.
- `mirrored`: `tf.distribute.MirroredStrategy` over all local GPUs (the CPU when there are none);
  with `num_cpu_devices=N` over N logical CPU devices instead, for testing on CPU-only machines.
- `multi_worker`: `tf.distribute.MultiWorkerMirroredStrategy`; the cluster and this process's
  task come from the `TF_CONFIG` environment variable (README section "Several machines").

`batch_size` is the GLOBAL batch: each step splits it over all replicas of all workers.

Every worker runs the whole of `training.train` (fit, evaluate, save: they are collective
operations), but only the chief writes to the real WORKDIR; the others write to a temporary
folder of their own, removed at the end (see `output_dir`).
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow)

import json
import os
import tempfile
from typing import Optional, Tuple

import tensorflow as tf

from tfp_vae.config import STRATEGIES, TrainingConfig

__all__ = [
    "STRATEGIES", "configure_cpu_devices", "create_strategy", "is_chief", "is_chief_process", "is_chief_task",
    "read_tf_config", "shard_by_data", "task_of", "worker_temp_dir",
]

TF_CONFIG = "TF_CONFIG"

# MultiWorkerMirroredStrategy can be created once per process (it starts the process's gRPC
# server and joins the cluster); a second train() in the same process reuses it.
_MULTI_WORKER = None


def read_tf_config(environ=None) -> dict:
    """The parsed TF_CONFIG ({} when unset), with the errors a user can fix named plainly."""
    environ = os.environ if environ is None else environ
    text = environ.get(TF_CONFIG, "").strip()
    if not text:
        return {}
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {text[:200]!r}") from None
    if not isinstance(values, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object with 'cluster' and 'task'; got {text[:200]!r}")
    return values


def is_chief_task(cluster: dict, task_type: Optional[str], task_id: Optional[int]) -> bool:
    """TensorFlow's rule: the `chief` task if the cluster has one, else `worker` 0; no cluster: chief."""
    if not cluster or task_type is None:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and int(task_id or 0) == 0 and "chief" not in cluster


def _check_multi_worker_tf_config(values: dict) -> None:
    cluster, task = values.get("cluster"), values.get("task")
    if not isinstance(cluster, dict) or not (cluster.get("worker") or cluster.get("chief")):
        raise ValueError(
            "--strategy multi_worker needs TF_CONFIG with a cluster of workers, e.g. "
            'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}\' (index 1 on the second host); '
            f"got TF_CONFIG={json.dumps(values) if values else 'unset'}. See the README section \"Several machines\".")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ValueError(f"TF_CONFIG's task {task!r} must name a task type of its cluster "
                         f"({sorted(cluster)}) and an index, e.g. {{\"type\": \"worker\", \"index\": 0}}.")
    index = task.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise ValueError(f"TF_CONFIG's task index {index!r} is out of range: the cluster has "
                         f"{len(cluster[task['type']])} {task['type']} task(s), indexed from 0.")


def configure_cpu_devices(count: int) -> None:
    """Splits the CPU into `count` logical devices; possible only before TensorFlow initialises."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError as error:
        raise RuntimeError(
            f"num_cpu_devices={count} (--num-cpu-devices) needs the CPU split into logical devices "
            "before TensorFlow initialises its devices, and this process already ran TensorFlow "
            f"({error}). Train in a fresh process, e.g. trainers/train.py --strategy mirrored "
            f"--num-cpu-devices {count}.") from None


def create_strategy(training: TrainingConfig) -> tf.distribute.Strategy:
    """The strategy `training.strategy` names; call it before any other TensorFlow work."""
    global _MULTI_WORKER
    if training.strategy == "default":
        return tf.distribute.get_strategy()
    if training.strategy == "mirrored":
        if training.num_cpu_devices:
            configure_cpu_devices(training.num_cpu_devices)
            devices = [device.name for device in tf.config.list_logical_devices("CPU")]
            return tf.distribute.MirroredStrategy(devices[:training.num_cpu_devices])
        return tf.distribute.MirroredStrategy()  # all local GPUs, or the CPU when there are none
    if training.strategy == "multi_worker":
        _check_multi_worker_tf_config(read_tf_config())
        if _MULTI_WORKER is None:
            _MULTI_WORKER = tf.distribute.MultiWorkerMirroredStrategy()
        return _MULTI_WORKER
    raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {training.strategy!r}.")


def task_of(strategy: tf.distribute.Strategy) -> Tuple[Optional[str], Optional[int], dict]:
    """(task type, task index, cluster dict) of this process; (None, None, {}) outside a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, None, {}
    cluster = resolver.cluster_spec().as_dict()
    if not cluster:
        return None, None, {}
    return resolver.task_type, resolver.task_id, cluster


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's outputs (always, unless it is a non-chief worker)."""
    task_type, task_id, cluster = task_of(strategy)
    return is_chief_task(cluster, task_type, task_id)


def is_chief_process(training: TrainingConfig, environ=None) -> bool:
    """Whether this process writes WORKDIR, from the config and TF_CONFIG, without TensorFlow."""
    if training.strategy != "multi_worker":
        return True
    values = read_tf_config(environ)
    task = values.get("task") or {}
    return is_chief_task(values.get("cluster") or {}, task.get("type"), task.get("index", 0))


def worker_temp_dir(strategy: tf.distribute.Strategy) -> str:
    """A fresh temporary folder for a non-chief worker's outputs (under $TMPDIR)."""
    task_type, task_id, _ = task_of(strategy)
    return tempfile.mkdtemp(prefix=f"tfp_vae-{task_type}{task_id}-")


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Multi-worker input: every worker runs the same seeded pipeline and keeps its share of
    each global batch (DATA sharding), so workers never see the same example in one step."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
