"""Meta-training across processes with tf.distribute.MultiWorkerMirroredStrategy.

Each worker runs this script with its index; TensorFlow's TF_CONFIG names the
cluster. `fit` splits every meta-batch across the workers and all-reduces the
meta-gradient, so every worker ends with the same meta-learner. `--launch=N`
starts N workers on this machine (localhost ports) and waits for them: the
example of docs/concepts.md.

  python scripts/multi_worker.py --launch=2 --workdir=runs/multi_worker
  # on machine i of a real cluster (same --cluster on all):
  python scripts/multi_worker.py --cluster=host0:12345,host1:12345 --index=i --workdir=DIR
"""

import json
import os
import socket
import subprocess
import sys

from absl import app, flags

_LAUNCH = flags.DEFINE_integer("launch", 0, "Start this many local workers and wait.")
_CLUSTER = flags.DEFINE_list("cluster", [], "host:port of every worker.")
_INDEX = flags.DEFINE_integer("index", 0, "This worker's index in --cluster.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/multi_worker", "Where each worker writes.")
_STEPS = flags.DEFINE_integer("steps", 50, "Meta-steps.")
_META_BATCH = flags.DEFINE_integer("meta_batch_size", 8, "Global meta-batch (tasks).")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch(count):
    cluster = ",".join(f"localhost:{port}" for port in free_ports(count))
    workers = [
        subprocess.Popen([sys.executable, __file__, f"--cluster={cluster}", f"--index={i}",
                          f"--workdir={_WORKDIR.value}", f"--steps={_STEPS.value}",
                          f"--meta_batch_size={_META_BATCH.value}"])
        for i in range(count)
    ]
    codes = [worker.wait(timeout=900) for worker in workers]
    if any(codes):
        raise SystemExit(f"worker exit codes: {codes}")
    print(f"{count} workers finished; see {_WORKDIR.value}/worker_*.json")


def work():
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": _CLUSTER.value}, "task": {"type": "worker", "index": _INDEX.value}}
    )
    import keras  # noqa: PLC0415  (TF_CONFIG must be set first)
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    import tf_maml  # noqa: PLC0415

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    keras.utils.set_random_seed(0)  # the same initial weights on every worker
    with strategy.scope():
        maml = tf_maml.MAML(tf_maml.nets.mlp(hidden=(40, 40)), inner_lr=0.01, inner_steps=1)
        maml.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    episodes = tf_maml.data.sinusoid_episodes(shots=10, meta_batch_size=_META_BATCH.value)
    options = tf.data.Options()
    # Every worker generates the same stream; DATA sharding gives each its share of tasks.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    history = maml.fit(episodes.with_options(options), steps_per_epoch=_STEPS.value, verbose=2)
    os.makedirs(_WORKDIR.value, exist_ok=True)
    summary = {
        "worker": _INDEX.value,
        "workers": strategy.num_replicas_in_sync,
        "loss": history.history["loss"][-1],
        "weights_checksum": float(sum(np.abs(w).sum() for w in maml.get_weights())),
    }
    with open(os.path.join(_WORKDIR.value, f"worker_{_INDEX.value}.json"), "w") as f:
        json.dump(summary, f)


def main(argv):
    del argv
    if _LAUNCH.value:
        launch(_LAUNCH.value)
    else:
        work()


if __name__ == "__main__":
    app.run(main)
