"""MAML++ (Antoniou et al., 2019): the "How to train your MAML" fixes, each switchable."""

import keras
import numpy as np
import tensorflow as tf

from tf_maml import rules
from tf_maml.engine import support_statistics
from tf_maml.learners.arguments import checked_inner_lr, checked_int, refuse
from tf_maml.episodes import task_parts
from tf_maml.learners import fixed, hyperparameter
from tf_maml.learners.maml import MAML
from tf_maml.learners.objective import TaskObjective
from tf_maml.rules.base import step_index


def multi_step_loss_weights(progress, steps, min_fraction=0.03):
    """MSL weights of the query losses after steps 1..`steps`.

    At `progress` 0 all steps weigh `1 / steps`; the weights of the
    non-final steps fall linearly to `min_fraction / steps` as `progress`
    reaches 1, the final step's rise to take the rest; from `progress` 1 on,
    only the final step counts (as in the MAML++ code).

    Args:
        progress: a float (or scalar tensor) >= 0.
        steps: number of inner steps.
        min_fraction: floor of the non-final weights, times `1 / steps`.

    Returns:
        A float32 tensor of `steps` weights summing to 1.
    """
    progress = tf.cast(progress, tf.float32)
    floor = min_fraction / steps
    early = tf.maximum(1.0 / steps - progress / steps, floor)
    annealed = tf.concat([tf.fill([steps - 1], early), [1.0 - (steps - 1) * early]], axis=0)
    final_only = tf.one_hot(steps - 1, steps)
    return tf.where(progress < 1.0, annealed, final_only)


@keras.saving.register_keras_serializable(package="tf_maml")
class MAMLPlusPlus(MAML):
    """MAML with the MAML++ training fixes; each one can be switched off.

    - LSLR (`learned_step_sizes`): the rule `rules.lslr(inner_lr,
      inner_steps)`, a meta-learned inner step size per variable and per
      inner step (steps beyond `inner_steps` at evaluation reuse the last
      one); off, plain `rules.sgd(inner_lr)`.
    - MSL (`multi_step_loss_steps`): for that many meta-steps the
      meta-objective is a weighted sum of the query losses after every inner
      step, annealed toward the last step (`multi_step_loss_weights`); 0
      turns it off.
    - DA (`first_order_steps`): first-order meta-gradients for that many
      meta-steps, second order afterwards; 0 turns it off. The second-order
      graph is built from the start and multiplied by 0 until the switch, so
      the first-order phase costs as much as the second-order one.
    - BNWB (`per_step_batch_norm`): BatchNormalization scale and offset per
      inner step, meta-learned and not adapted in the inner loop.
    - CA: cosine annealing of the outer learning rate is a Keras schedule:
      `keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(...))`.

    Per-step BatchNorm running statistics (BNRS) have no separate switch:
    tf_maml normalizes queries with batch statistics (transductive) or with
    the support set's statistics under the adapted weights, never with
    running averages, so per-step running averages would never be read.

    Args:
        model, inner_lr, inner_steps, eval_inner_steps, transductive, name:
            as `MAML`. `first_order=True` is refused: MAML++ anneals from
            first to second order with `first_order_steps`.
        learned_step_sizes: LSLR on or off.
        multi_step_loss_steps: meta-steps of MSL (MAML++: 15 epochs of 500).
        first_order_steps: meta-steps of first-order training (DA).
        per_step_batch_norm: BNWB on or off.

    Example:

    ```python
    maml_pp = tf_maml.MAMLPlusPlus(tf_maml.nets.conv4(5), inner_lr=0.1, inner_steps=5,
                                   multi_step_loss_steps=7500, first_order_steps=25000)
    cosine = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=150_000, alpha=1e-5 / 1e-3)
    maml_pp.compile(optimizer=keras.optimizers.Adam(cosine), loss=..., metrics=["accuracy"])
    ```
    """

    inner_steps = hyperparameter(
        "inner_steps", fixed("inner_steps", "LSLR's step sizes and the per-step BatchNorm "
                             "weights have one entry per inner step"),
        "Inner steps per task in meta-training.")
    first_order = hyperparameter(
        "first_order", fixed("first_order", "it anneals from first to second order with "
                             "first_order_steps"),
        "False: MAML++ is first-order for `first_order_steps` meta-steps only.")

    def __init__(self, model, inner_lr=0.1, inner_steps=5, learned_step_sizes=True,
                 multi_step_loss_steps=7500, first_order_steps=0, per_step_batch_norm=True,
                 first_order=False, **kwargs):
        refuse(kwargs, "MAMLPlusPlus", inner_optimizer="its rule is LSLR (learned_step_sizes)")
        if first_order:
            raise ValueError(
                "MAMLPlusPlus does not take first_order=True: it trains first-order for "
                "`first_order_steps` meta-steps, then second-order (DA). For first-order "
                "throughout use MAML(first_order=True) or FOMAML."
            )
        inner_lr = checked_inner_lr(inner_lr)
        step_sizes = rules.lslr(inner_lr, inner_steps) if learned_step_sizes else rules.sgd(inner_lr)
        # BatchNorm weights are per step (BNWB), not adapted.
        rule = rules.masked(step_sizes, _NotBatchNorm()) if per_step_batch_norm else step_sizes
        super().__init__(model, inner_steps=inner_steps, inner_optimizer=rule, **kwargs)
        self._inner_lr = inner_lr
        self._step_size_rule = step_sizes
        self.learned_step_sizes = bool(learned_step_sizes)
        self.per_step_batch_norm = bool(per_step_batch_norm)
        self.multi_step_loss_steps = multi_step_loss_steps
        self.first_order_steps = first_order_steps
        self.batch_norm_weights = None

    multi_step_loss_steps = hyperparameter(
        "multi_step_loss_steps", lambda meta, v: checked_int(v, "multi_step_loss_steps", 0),
        "Meta-steps of the multi-step loss (MSL); 0: off.")
    first_order_steps = hyperparameter(
        "first_order_steps", lambda meta, v: checked_int(v, "first_order_steps", 0),
        "Meta-steps of first-order meta-gradients before second order (DA); 0: off.")

    def inner_rule(self, rule):
        raise AttributeError(
            f"`inner_optimizer` of MAMLPlusPlus is fixed: its rule is LSLR "
            f"(learned_step_sizes; received {rule!r}).")

    @property
    def step_sizes(self):
        """LSLR's learned step sizes, `[inner_steps]` per variable (None when off)."""
        return self._step_size_rule.learning_rates if self.learned_step_sizes else None

    def build_member(self):
        if self.batch_norm_weights is not None:
            return
        variables = self.model.trainable_variables
        position = {id(v): i for i, v in enumerate(variables)}
        # Positions of BatchNorm scale and offset in the model's trainable variables.
        self._batch_norm_positions = [
            position[id(v)]
            for layer in support_statistics.batch_norm_layers(self.model)
            for v in layer.trainable_variables
        ] if self.per_step_batch_norm else []
        # Every step's BatchNorm scale or offset starts from the model's own.
        self.batch_norm_weights = [
            self.add_weight(
                shape=(self.inner_steps,) + tuple(variables[i].shape),
                initializer=keras.initializers.Constant(0.0),
                name=f"per_step_{variables[i].name}", dtype=variables[i].dtype,
            )
            for i in self._batch_norm_positions
        ]
        for i, copies in zip(self._batch_norm_positions, self.batch_norm_weights):
            copies.assign(np.broadcast_to(variables[i].numpy(), copies.shape))

    @property
    def member_variables(self):
        return list(self.batch_norm_weights or [])

    def step_weights(self, params, step):
        if not self.batch_norm_weights:
            return params
        index = step_index(step, self.inner_steps)
        params = list(params)
        for i, per_step in zip(self._batch_norm_positions, self.batch_norm_weights):
            params[i] = tf.gather(per_step, index)
        return params

    def _progress(self, steps):
        if steps == 0:
            return tf.constant(1.0)
        return tf.cast(self.optimizer.iterations, tf.float32) / float(steps)

    def task_objective(self, task, params, state, steps, first_order, training):
        if training and self.first_order_steps:
            # DA: first order until the switch, in the graph (no retracing).
            first_order = self._progress(self.first_order_steps) < 1.0
        if not training or not self.multi_step_loss_steps or steps < 2:
            return super().task_objective(task, params, state, steps, first_order, training)
        support_x, support_y, query_x, query_y, support_weight, query_weight = task_parts(task)
        weights = multi_step_loss_weights(self._progress(self.multi_step_loss_steps), steps)
        fast, rule_state, objective = params, None, 0.0
        for step in range(steps):
            fast, state, rule_state = self.inner_loop.adapt(
                fast, state, support_x, support_y, 1, first_order, rule_state, first_step=step,
                weights=support_weight,
            )
            y_pred, extra = self.inner_loop.predict(
                fast, state, support_x, query_x, self.transductive, step, support_weight,
                query_weight,
            )
            loss = self.task_loss(query_x, query_y, y_pred, extra, query_weight, training)
            objective += tf.cast(weights[step], loss.dtype) * loss
        return TaskObjective(fast, state, y_pred, loss, objective)

    def get_config(self):
        config = super().get_config()
        for name in ("first_order", "inner_optimizer"):
            config.pop(name)
        return {
            **config,
            "inner_lr": self.inner_lr,
            "learned_step_sizes": self.learned_step_sizes,
            "multi_step_loss_steps": self.multi_step_loss_steps,
            "first_order_steps": self.first_order_steps,
            "per_step_batch_norm": self.per_step_batch_norm,
        }


class _NotBatchNorm:
    """The adapted layers under per-step BatchNorm weights: all but BatchNorm."""

    def __call__(self, layer):
        return not isinstance(layer, keras.layers.BatchNormalization)

    def __repr__(self):
        return "every layer but BatchNormalization"
