"""How close an iMAML run's inner loop comes to the proximal minimizer its meta-gradient assumes.

iMAML's implicit meta-gradient is exact at a minimizer `phi*` of the support
loss plus `proximal_weight / 2 * ||phi - theta||^2`. For test tasks of the
run's config, this adapts the meta-learned weights with 0, 5, 10, ... inner
steps (`adapt`, its inner rule) and prints the mean norm of that objective's
gradient at the adapted weights (0 at `phi*`) and the mean `||phi - theta||`.

  python scripts/imaml_residual.py --config=configs/omniglot.py:5w1s \
      --config.data_dir=DIR --meta=runs/seeds_5w1s_imaml/seed_0/meta.keras
"""

from absl import app, flags
from ml_collections import config_flags
import numpy as np
import tensorflow as tf

from tf_maml.runs import checkpoints, tasks

_CONFIG = config_flags.DEFINE_config_file("config", None, "The config the run was trained with.")
_META = flags.DEFINE_string("meta", None, "The run's meta.keras (an IMAML meta-learner).")
_STEPS = flags.DEFINE_list("steps", ["0", "5", "10", "20", "50"], "Inner steps to adapt with.")
_TASKS = flags.DEFINE_integer("tasks", 8, "Test tasks (of the first meta-batch).")
flags.mark_flags_as_required(["config", "meta"])


def _global_norm(tensors):
    return float(tf.linalg.global_norm(tensors))


def residuals(meta, support_x, support_y, steps):
    """`(gradient norm, ||phi - theta||)` of the proximal objective after `steps` steps."""
    theta = [tf.identity(v) for v in meta.model.trainable_variables]
    model = meta.adapt(support_x, support_y, steps=steps) if steps else meta.model
    with tf.GradientTape() as tape:
        weights = model.trainable_variables
        y_pred = model(support_x, training=True)  # as the inner loop computes it
        offsets = [w - t for w, t in zip(weights, theta)]
        objective = (meta.compute_loss(support_x, support_y, y_pred)
                     + meta.proximal_weight / 2 * tf.add_n([tf.reduce_sum(o * o) for o in offsets]))
    return _global_norm(tape.gradient(objective, weights)), _global_norm(offsets)


def main(argv):
    del argv
    meta = checkpoints.load_model(_META.value)
    if not hasattr(meta, "proximal_weight"):
        raise app.UsageError(f"{_META.value} holds a {type(meta).__name__}, not an IMAML.")
    (support_x, support_y), _ = next(iter(tasks.episodes(_CONFIG.value, "test", num_batches=1)))
    count = min(_TASKS.value, int(support_x.shape[0]))
    for steps in (int(s) for s in _STEPS.value):
        values = np.array([residuals(meta, support_x[t], support_y[t], steps)
                           for t in range(count)])
        print(f"{steps:3d} inner steps: gradient norm of the proximal objective "
              f"{values[:, 0].mean():.3f}, ||phi - theta|| {values[:, 1].mean():.3f} "
              f"(mean over {count} test tasks)")


if __name__ == "__main__":
    app.run(main)
