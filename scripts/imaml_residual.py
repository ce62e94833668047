"""How close an iMAML run's inner loop comes to the proximal minimizer its meta-gradient assumes.

iMAML's implicit meta-gradient is exact at a minimizer `phi*` of the support
loss plus `proximal_weight / 2 * ||phi - theta||^2`. For test tasks of the
run's config, this adapts the meta-learned weights with 0, 5, 10, ... inner
steps (`adapt`, its inner rule) and prints the mean norm of that objective's
gradient at the adapted weights (0 at `phi*`) and the mean `||phi - theta||`.

With `--unrolled=LR:STEPS,...` it also compares, for each inner loop
(STEPS steps of LR), iMAML's implicit meta-gradient with the exact gradient
of the procedure it runs: MAML, second order, through the same proximal
inner loop (its meta-gradient equals iMAML's only once that loop reaches
`phi*`), and with the first-order one; it prints their cosines and norms.

  python scripts/imaml_residual.py --config=configs/omniglot.py:5w1s \
      --config.data_dir=DIR --meta=runs/seeds_5w1s_imaml/seed_0/meta.keras \
      --unrolled=0.1:5,0.03:10,0.03:40
"""

from absl import app, flags
from ml_collections import config_flags
import keras
import numpy as np
import tensorflow as tf

import tf_maml
from tf_maml import rules
from tf_maml.runs import checkpoints, tasks

_CONFIG = config_flags.DEFINE_config_file("config", None, "The config the run was trained with.")
_META = flags.DEFINE_string("meta", None, "The run's meta.keras (an IMAML meta-learner).")
_STEPS = flags.DEFINE_list("steps", ["0", "5", "10", "20", "50"], "Inner steps to adapt with.")
_TASKS = flags.DEFINE_integer("tasks", 8, "Test tasks (of the first meta-batch).")
_UNROLLED = flags.DEFINE_list("unrolled", [], "Inner loops LR:STEPS for which to compare the "
                               "implicit meta-gradient with the unrolled one.")
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


def meta_gradient(meta, episode):
    """The meta-gradient of one meta-step on `episode`, flat; the weights are put back."""
    meta.compile(optimizer=keras.optimizers.SGD(1.0), loss=meta.loss)  # the run's loss
    before = [v.numpy() for v in meta.trainable_variables]
    state = [(v, v.numpy()) for v in meta.model.non_trainable_variables]
    meta.train_on_batch(*episode)
    grads = [b - v.numpy() for b, v in zip(before, meta.trainable_variables)]
    for v, value in state + list(zip(meta.trainable_variables, before)):
        v.assign(value)
    return np.concatenate([g.ravel() for g in grads])


def against_unrolled(imaml, episode, inner_lr, steps):
    """`{name: (cosine with the unrolled gradient, norm)}` for iMAML's implicit
    meta-gradient, the unrolled (exact) one and the first-order one, with `steps` inner
    steps of `inner_lr` (all three adapt alike: the proximal term, then SGD; the same
    normalization). The implicit one carries two errors: an inner loop short of `phi*`
    and a conjugate gradient solve of `imaml.cg_steps` steps. `imaml` keeps its inner
    loop (rule and steps) as it was."""
    kept = imaml.inner_optimizer.rules[1], imaml.inner_steps
    imaml.inner_optimizer, imaml.inner_steps = rules.sgd(inner_lr), steps
    grads = {"implicit (iMAML)": meta_gradient(imaml, episode)}
    imaml.inner_optimizer, imaml.inner_steps = kept
    for name, first_order in (("unrolled (MAML, second order)", False), ("first order", True)):
        maml = tf_maml.MAML(keras.models.clone_model(imaml.model), inner_steps=steps,
                            first_order=first_order, transductive=imaml.transductive,
                            fused_batch_norm=imaml.fused_batch_norm,
                            inner_optimizer=rules.chain(
                                rules.proximal(imaml.proximal_weight), rules.sgd(inner_lr)))
        maml.model.set_weights(imaml.model.get_weights())
        maml.loss = imaml.loss
        grads[name] = meta_gradient(maml, episode)
    exact = grads["unrolled (MAML, second order)"]
    return {name: (float(g @ exact / np.linalg.norm(g) / np.linalg.norm(exact)),
                   float(np.linalg.norm(g))) for name, g in grads.items()}


def main(argv):
    del argv
    meta = checkpoints.load_model(_META.value)
    if not hasattr(meta, "proximal_weight"):
        raise app.UsageError(f"{_META.value} holds a {type(meta).__name__}, not an IMAML.")
    episode = next(iter(tasks.episodes(_CONFIG.value, "test", num_batches=1)))
    (support_x, support_y), _ = episode
    count = min(_TASKS.value, int(support_x.shape[0]))
    for steps in (int(s) for s in _STEPS.value):
        values = np.array([residuals(meta, support_x[t], support_y[t], steps)
                           for t in range(count)])
        print(f"{steps:3d} inner steps: gradient norm of the proximal objective "
              f"{values[:, 0].mean():.3f}, ||phi - theta|| {values[:, 1].mean():.3f} "
              f"(mean over {count} test tasks)")
    first_tasks = tf.nest.map_structure(lambda t: t[:count], episode)
    for setting in _UNROLLED.value:
        inner_lr, steps = setting.split(":")
        compared = against_unrolled(meta, first_tasks, float(inner_lr), int(steps))
        print(f"{steps} inner steps of {inner_lr}, meta-batch of {count} "
              "test tasks: " + "; ".join(f"{name}: cosine with the unrolled {c:.3f}, norm "
                                          f"{n:.3f}" for name, (c, n) in compared.items()))


if __name__ == "__main__":
    app.run(main)
