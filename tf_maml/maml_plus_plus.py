"""MAML++ (Antoniou et al., 2019): the "How to train your MAML" fixes, each switchable."""

import keras
import numpy as np
import tensorflow as tf

from tf_maml.meta_learner import MAML


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

    - LSLR (`learned_step_sizes`): a meta-learned inner step size per
      variable and per inner step (initialized to `inner_lr`; steps beyond
      `inner_steps` at evaluation reuse the last one).
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
            as `MAML`.
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

    def __init__(self, model, inner_lr=0.1, inner_steps=5, learned_step_sizes=True,
                 multi_step_loss_steps=7500, first_order_steps=0, per_step_batch_norm=True,
                 **kwargs):
        kwargs.pop("first_order", None)
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps, **kwargs)
        for name, value in (("multi_step_loss_steps", multi_step_loss_steps),
                            ("first_order_steps", first_order_steps)):
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"`{name}` must be an integer >= 0; received {value!r}.")
        self.learned_step_sizes = bool(learned_step_sizes)
        self.multi_step_loss_steps = int(multi_step_loss_steps)
        self.first_order_steps = int(first_order_steps)
        self.per_step_batch_norm = bool(per_step_batch_norm)
        self.step_sizes = None
        self.batch_norm_weights = None
        if model.built:
            self._create_inner_variables()

    def build(self, input_shape):
        super().build(input_shape)
        self._create_inner_variables()

    def _batch_norm_indices(self):
        """Positions of BatchNorm scale/offset in the model's trainable variables."""
        position = {id(v): i for i, v in enumerate(self.model.trainable_variables)}
        return [
            position[id(v)]
            for layer in self._batch_norm_layers
            for v in layer.trainable_variables
        ]

    def _create_inner_variables(self):
        if self.step_sizes is not None:
            return
        variables = self.model.trainable_variables
        self.step_sizes = [
            self._add_filled_weight((self.inner_steps,), self.inner_lr, f"step_size_{i}",
                                    variable.dtype, trainable=self.learned_step_sizes)
            for i, variable in enumerate(variables)
        ]
        # Every step's BatchNorm scale or offset starts from the model's own.
        self.batch_norm_weights = [
            self._add_filled_weight((self.inner_steps,) + tuple(variables[i].shape),
                                    variables[i].numpy(), f"per_step_{variables[i].name}",
                                    variables[i].dtype)
            for i in (self._batch_norm_indices() if self.per_step_batch_norm else [])
        ]

    @property
    def _inner_variables(self):
        if self.step_sizes is None:
            return []
        sizes = self.step_sizes if self.learned_step_sizes else []
        return list(sizes) + list(self.batch_norm_weights)

    def _inner_values(self, inner):
        """Splits the inner values into (step sizes, per-step BN weights)."""
        if self.learned_step_sizes:
            count = len(self.step_sizes)
            return inner[:count], inner[count:]
        return [tf.convert_to_tensor(v) for v in self.step_sizes], inner

    @property
    def _adapted_indices(self):
        if not self.per_step_batch_norm:
            return super()._adapted_indices
        fixed = set(self._batch_norm_indices())
        return [i for i in range(len(self.model.trainable_variables)) if i not in fixed]

    _inner_steps_differ = True

    def _inner_update(self, params, grads, inner, step, slots):
        sizes, _ = self._inner_values(inner)
        index = min(step, self.inner_steps - 1)
        sizes = [sizes[i][index] for i in self._adapted_indices]
        return [p - lr * g for p, lr, g in zip(params, sizes, grads)], slots

    def _step_params(self, params, inner, step):
        if not self.per_step_batch_norm or not inner:
            return params
        _, copies = self._inner_values(inner)
        index = min(step, self.inner_steps - 1)
        params = list(params)
        for i, per_step in zip(self._batch_norm_indices(), copies):
            params[i] = per_step[index]
        return params

    def _progress(self, steps):
        if steps == 0:
            return tf.constant(1.0)
        return tf.cast(self.optimizer.iterations, tf.float32) / float(steps)

    def _second_order_gradients(self, grads):
        if not self.first_order_steps:
            return grads
        # 0 before the switch, 1 after: the value is the gradient either way;
        # only its derivative (the second-order term) is switched.
        second_order = tf.cast(self._progress(self.first_order_steps) >= 1.0, grads[0].dtype)
        return [tf.stop_gradient(g) + second_order * (g - tf.stop_gradient(g)) for g in grads]

    def _task_objective(self, params, inner, state, task, steps, first_order, training):
        if not training or not self.multi_step_loss_steps or steps < 2:
            return super()._task_objective(params, inner, state, task, steps, first_order, training)
        sx, sy, qx, qy = task
        weights = multi_step_loss_weights(self._progress(self.multi_step_loss_steps), steps)
        fast, objective = params, 0.0
        for step in range(steps):
            fast, state = self._adapt_task(fast, state, sx, sy, 1, first_order, inner, step)
            y_pred, extra = self._predict_query(fast, state, sx, qx, self.transductive, inner, step)
            loss = self._loss(qy, y_pred, extra)
            objective += tf.cast(weights[step], loss.dtype) * loss
        return fast, state, y_pred, loss, objective

    def get_config(self):
        config = super().get_config()
        config.pop("first_order")
        return {
            **config,
            "learned_step_sizes": self.learned_step_sizes,
            "multi_step_loss_steps": self.multi_step_loss_steps,
            "first_order_steps": self.first_order_steps,
            "per_step_batch_norm": self.per_step_batch_norm,
        }
