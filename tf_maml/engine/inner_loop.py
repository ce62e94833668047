"""The inner loop: one task's weights adapted to its support set by an update rule.

Everything here is a pure function of tensors (weights, model state, rule
state, examples), so second-order differentiation goes through it and many
threads may adapt at once. The meta-learner hands in what it needs: the
wrapped model, the task loss and the rule. The rule's state is returned, so
a caller that adapts step by step (evaluation curves) keeps it.
"""

import functools

import keras
import tensorflow as tf

from tf_maml import episodes
from tf_maml.engine import support_statistics
from tf_maml.keras_patches import call_has_training_arg, compute_output_spec, example_weights
from tf_maml.rules import model_weights


def _zero_after(tensors):
    """A zero computed from `tensors`' values.

    Added to a recomputation's inputs, it makes the recomputation wait for
    the backward pass to reach it: without that data dependency, TensorFlow's
    graph optimizer merges the recomputed ops with the identical forward ones
    (common subexpressions), and the activations are kept after all.
    """
    first = tf.reshape(tensors[0], [-1])[:1]
    value = tf.reduce_max(tf.cast(first, tf.float32))  # -inf when empty
    return tf.where(tf.equal(value, value), 0.0, float("nan"))  # NaN only from a NaN


def last_step(steps):
    """Index of the last of `steps` inner steps (0 when none): per-step weights use it."""
    return max(steps - 1, 0)


def stateless_forward(model, params, state, x, training, weights=None, return_losses=False):
    """`model.stateless_call` under `params` and `state`, in `training` mode where the
    model takes one, padding (`weights` 0) left out of BatchNorm's statistics."""
    kwargs = {"training": training} if call_has_training_arg(model) else {}
    with example_weights(weights):
        return model.stateless_call(params, state, x, return_losses=return_losses, **kwargs)


class InnerLoop:
    """Adaptation of `model`'s weights to one task with `rule`.

    Every method taking examples takes their `weights` too (`[examples]`, 0
    marking padding; None: every example counts): losses and BatchNorm
    statistics then ignore padding.

    Args:
        model: the wrapped `keras.Model`.
        loss: `loss(x, y, y_pred, extra_losses, weights)`, the task loss (a
            scalar) of predictions `y_pred` of examples `x` with labels `y`.
        rule: a `tf_maml.rules.Rule`; built here with the weights it selects.
        forward_params: `(params, step) -> params`, the weights the forward
            pass of inner step `step` runs with (MAML++'s per-step BatchNorm
            weights); by default the weights themselves.
        recompute: second-order steps recompute their activations for the
            meta-gradient instead of keeping them (gradient checkpointing).
        meta_variables: `() -> list` of the meta-learned variables a step
            may read (the rule's, `forward_params`'); a recomputed step
            takes their values as inputs, so their meta-gradient survives.
    """

    def __init__(self, model, loss, rule, forward_params=None, recompute=False,
                 meta_variables=None):
        self.model, self.loss, self.rule = model, loss, rule
        self.forward_params = forward_params or (lambda params, step: params)
        self.recompute = recompute
        self.meta_variables = meta_variables or (lambda: [])
        weights = model_weights(model)
        selected = {id(w.variable) for w in rule.select(weights)}
        # Positions in model.trainable_variables of the weights that adapt.
        self.adapted = [i for i, w in enumerate(weights) if id(w.variable) in selected]
        if not rule.built:
            rule.build([weights[i] for i in self.adapted])

    def forward(self, params, state, x, training, weights=None):
        """`(outputs, state, losses)` of the wrapped model under `params`."""
        return stateless_forward(self.model, params, state, x, training, weights,
                                 return_losses=True)

    def output_spec(self, example_spec):
        """The model's output spec (nested for several outputs) for a batch of
        examples of per-example `example_spec` (a symbolic call)."""
        return compute_output_spec(self.model, episodes.batched(example_spec))

    def current_values(self):
        """The model's trainable and non-trainable variables as tensors: `(params, state)`."""
        return ([tf.convert_to_tensor(v) for v in self.model.trainable_variables],
                [tf.convert_to_tensor(v) for v in self.model.non_trainable_variables])

    def init(self, params):
        """The rule's state at the start of a task."""
        return self.rule.init([params[i] for i in self.adapted])

    def adapt(self, params, state, x, y, steps, first_order, rule_state=None, first_step=0,
              weights=None):
        """`steps` inner steps on the support set `(x, y)`.

        Args:
            params, state: the model's trainable and non-trainable values.
            steps: a Python int; `first_step` numbers the first of them.
            first_order: if True, the inner gradients are constants; a scalar
                bool tensor switches that in the graph (the second-order
                graph is built either way: MAML++'s DA).
            rule_state: the rule's state to continue from; None starts a task.

        Returns:
            `(params, state, rule_state)` after the steps.
        """
        if rule_state is None:
            rule_state = self.init(params)
        recompute = self.recompute and first_order is not True
        step_fn = functools.partial(self.step, first_order=first_order, weights=weights)
        if recompute:
            step_fn = functools.partial(self._recomputed_step, first_order=first_order,
                                        weights=weights)
        elif tf.inside_function():
            # While tracing, one tf.function traced once and called at every
            # step: tracing time stays flat in the number of steps. Eagerly
            # (`adapt`), steps run op by op: a tf.function would retrace.
            step_fn = tf.function(step_fn, autograph=False)
        for step in range(first_step, first_step + steps):
            params, state, rule_state = step_fn(
                params, state, rule_state, x, y, tf.constant(step, tf.int32)
            )
        return params, state, rule_state

    def step(self, params, state, rule_state, x, y, step, first_order=False, weights=None):
        """One inner step; returns `(params, state, rule_state)`."""
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(params)
            y_pred, new_state, extra_losses = self.forward(
                self.forward_params(params, step), state, x, training=True, weights=weights
            )
            loss = self.loss(x, y, y_pred, extra_losses, weights)
        adapted = [params[i] for i in self.adapted]
        grads = tape.gradient(loss, adapted, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grads = [tf.convert_to_tensor(g) for g in grads]  # IndexedSlices (embeddings) made dense
        if first_order is True:
            grads = [tf.stop_gradient(g) for g in grads]
        elif first_order is not False:  # a tensor: 1 keeps the value, drops the derivative
            second = 1.0 - tf.cast(first_order, grads[0].dtype) if grads else None
            grads = [tf.stop_gradient(g) + second * (g - tf.stop_gradient(g)) for g in grads]
        updated, rule_state = self.rule.update(grads, rule_state, adapted, step)
        _check_update(self.rule, updated, adapted)
        # Moving statistics and RNG seeds move on, outside the differentiated path.
        return self._with_adapted(params, updated), [tf.stop_gradient(s) for s in new_state], rule_state

    def _recomputed_step(self, params, state, rule_state, x, y, step, first_order=False,
                         weights=None):
        """`step` whose meta-gradient recomputes it (gradient checkpointing).

        Only the step's inputs are kept for the backward pass, not its
        activations. `tf.custom_gradient` rather than `tf.recompute_grad`:
        the latter stops every tape during the forward pass, the inner
        gradient's tape included.
        """
        flat_rule_state = tf.nest.flatten(rule_state)
        meta_variables = self.meta_variables()
        # As read here: the tensors the meta-learner maps them to, if it does.
        meta_values = [tf.convert_to_tensor(v) for v in meta_variables]
        num_params, num_rule = len(params), len(flat_rule_state)
        new_state = []

        @tf.custom_gradient
        def step_fn(*values):
            def run(values):
                rule_values = tf.nest.pack_sequence_as(
                    rule_state, list(values[num_params:num_params + num_rule])
                )
                reading = list(zip(meta_variables, values[num_params + num_rule:]))
                with keras.StatelessScope(state_mapping=reading, initialize_variables=False):
                    out, out_state, out_rule = self.step(
                        list(values[:num_params]), state, rule_values, x, y, step,
                        first_order=first_order, weights=weights,
                    )
                # Every weight is an input; only the adapted ones are outputs.
                # (Identities: a rule state passed through unchanged is an output too.)
                outputs = [out[i] for i in self.adapted] + tf.nest.flatten(out_rule)
                return [tf.identity(t) for t in outputs], out_state

            out, out_state = run(values)
            new_state.extend(out_state)

            def grad(*upstream, variables=None):
                # Variables the step reads (e.g. the optimizer's step count) get
                # their gradients too, where they have any.
                variables = list(variables or [])
                floating = [v for v in variables if v.dtype.is_floating]
                after = _zero_after(upstream)
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    values_again = [v if v.dtype == tf.bool else v + tf.cast(after, v.dtype)
                                    for v in values]
                    tape.watch(values_again + floating)
                    out_again, _ = run(values_again)
                grads = tape.gradient(
                    out_again, values_again + floating, output_gradients=list(upstream),
                    unconnected_gradients=tf.UnconnectedGradients.ZERO,
                )
                by_variable = dict(zip(map(id, floating), grads[len(values):]))
                return grads[: len(values)], [by_variable.get(id(v)) for v in variables]

            return out, grad

        out = step_fn(*params, *flat_rule_state, *meta_values)
        count = len(self.adapted)
        rule_state = tf.nest.pack_sequence_as(rule_state, list(out[count:]))
        return self._with_adapted(params, out[:count]), new_state, rule_state

    def predict(self, params, state, support_x, x, transductive, step=0, support_weights=None,
                weights=None):
        """Predictions for `x` and the regularization losses, under `params`.

        `transductive`: BatchNorm normalizes with the statistics of `x`
        itself; otherwise with the support set's, each example on its own.
        `step`: the inner step whose per-step weights apply (MAML++).
        """
        params = self.forward_params(params, step)
        if transductive:
            y_pred, _, extra_losses = self.forward(params, state, x, training=True,
                                                   weights=weights)
            return y_pred, extra_losses
        state = self.with_support_statistics(params, state, support_x, support_weights)
        y_pred, _, extra_losses = self.forward(params, state, x, training=False)
        return y_pred, extra_losses

    def with_support_statistics(self, params, state, support_x, weights=None):
        """`state` with BatchNorm moving statistics set to the support set's under `params`."""
        forward = functools.partial(self.forward, weights=weights)
        return support_statistics.with_support_statistics(
            self.model, forward, params, state, support_x
        )

    def served_values(self, params, state, support_x, support_y, steps, weights=None):
        """Adapted weights and the state that predicts with them, one example at a time.

        Returns `(params, state)` for `stateless_call(..., training=False)`:
        BatchNorm statistics in `state` are the support set's under the
        adapted weights.
        """
        params, state, _ = self.adapt(params, state, support_x, support_y, steps, True,
                                      weights=weights)
        params = self.forward_params(params, last_step(steps))
        return params, self.with_support_statistics(params, state, support_x, weights)

    def _with_adapted(self, params, values):
        """`params` with the adapted ones replaced by `values`."""
        params = list(params)
        for i, value in zip(self.adapted, values):
            params[i] = value
        return params


def _check_update(rule, updated, params):
    """A rule's `update` must give one new value per weight, each of its weight's shape."""
    name = f"{type(rule).__name__}.update ({rule!r})"
    if not isinstance(updated, (list, tuple)) or len(updated) != len(params):
        count = len(updated) if isinstance(updated, (list, tuple)) else type(updated).__name__
        raise ValueError(
            f"{name} returned {count} new weights for the {len(params)} weights it was given; "
            "it must return one new value per weight, in their order.")
    for i, (new, old) in enumerate(zip(updated, params)):
        if not tf.TensorShape(getattr(new, "shape", None)).is_compatible_with(old.shape):
            raise ValueError(
                f"{name} returned shape {tuple(new.shape)} for weight {i}, of shape "
                f"{tuple(old.shape)}; each new value must have its weight's shape.")
