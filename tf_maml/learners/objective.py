"""What a meta-step computes, and the public contract of a family member.

`MetaObjective` is the part of `tf_maml.MAML` a member (`tf_maml.family`,
or one of your own: docs/family.md, "Writing a member") changes, each
choice a public method with MAML's default:

- `build_member()` / `member_variables`: meta-learned variables besides
  the rule's (MAML++'s per-step BatchNorm weights);
- `starting_weights(params, state, support_x, support_y, support_weight)`:
  the weights a task's adaptation starts from (ProtoMAML's head from the
  support prototypes);
- `step_weights(params, step)`: the weights inner step `step` runs with;
- `task_objective(...)`: one task's adaptation and what the meta-gradient
  differentiates (MAML++'s multi-step loss);
- `differentiates_adaptation` and `task_meta_gradients(...)`: one task's
  meta-gradient (Reptile's needs no tape);
- `inner_rule(rule)` (on `MAML`): the rule run when `inner_optimizer` is
  assigned (ANIL masks it).

None is called from `__init__`. The tasks of a meta-batch run in the task
loop (`tf_maml.engine.task_loop`); each adapts with the inner loop.
"""

import collections
import contextlib

import keras
import tensorflow as tf

from tf_maml import episodes
from tf_maml.engine import compiled_loss
from tf_maml.engine import task_loop as task_loop_lib
from tf_maml.engine.inner_loop import last_step
from tf_maml.keras_patches import compile_loss, scale_loss_for_distribution

TaskObjective = collections.namedtuple(
    "TaskObjective", ["fast", "state", "predictions", "loss", "objective"])
TaskObjective.__doc__ = """One task's adaptation, as `task_objective` returns it.

`fast`: the adapted weights; `state`: the model state after adaptation;
`predictions` and `loss`: the query predictions and loss after adaptation
(what is logged); `objective`: what the meta-gradient differentiates.
"""


class MetaObjective:
    """Mixed into `MAML`: the per-task meta-objective and the meta-batch."""

    # Whether the meta-gradient differentiates through the adaptation: the
    # tape records `task_objective` (Reptile's records nothing).
    differentiates_adaptation = True

    def build_member(self):
        """Creates the member's own meta-learned variables (`self.add_weight`).

        Called once, when the meta-learner is built (the wrapped model's
        weights exist then), never from `__init__`; list them in
        `member_variables`.
        """

    @property
    def member_variables(self):
        """The member's meta-learned variables besides the rule's (MAML++: per-step BatchNorm)."""
        return []

    def starting_weights(self, params, state, support_x, support_y, support_weight):
        """The weights one task's adaptation starts from, given its support set.

        By default `params` themselves, the meta-learned initialization.
        Everything that adapts (meta-training, evaluation, `predict`,
        `adapt`, `export_adaptive`) starts from these, and the meta-gradient
        differentiates through them. `support_weight` is `[examples]`, 0
        marking padding, or None.
        """
        del state, support_x, support_y, support_weight
        return params

    def step_weights(self, params, step):
        """The weights the forward pass of inner step `step` (a scalar int32 tensor)
        runs with, from the adapted ones `params`; by default `params` themselves."""
        del step
        return params

    def task_objective(self, task, params, state, steps, first_order, training):
        """Adapts to one task and returns a `TaskObjective`.

        Args:
            task: one task's tensors (`tf_maml.episodes.task_parts(task)`).
            params, state: the model's trainable and non-trainable values.
            steps: inner steps (a Python int).
            first_order: True to take the inner gradients as constants (a
                scalar bool tensor switches it in the graph).
            training: True in meta-training, False in evaluation.

        MAML's: `steps` steps of the inner rule, the query loss after the
        last one as the objective.
        """
        support_x, support_y, query_x, query_y, support_weight, query_weight = (
            episodes.task_parts(task))
        fast, state, _ = self.inner_loop.adapt(
            params, state, support_x, support_y, steps, first_order, weights=support_weight
        )
        y_pred, extra = self.inner_loop.predict(
            fast, state, support_x, query_x, self.transductive, last_step(steps),
            support_weight, query_weight,
        )
        loss = self.task_loss(query_x, query_y, y_pred, extra, query_weight, training)
        return TaskObjective(fast, state, y_pred, loss, loss)

    def task_meta_gradients(self, tape, objective, params, meta_values, fast):
        """One task's contribution to the meta-gradient, aligned with `params + meta_values`.

        `tape` recorded `task_objective` (unless `differentiates_adaptation`
        is False); `params` are the meta-learned weights (not the task's
        `starting_weights`, which a tape differentiates through), `fast` the
        adapted ones. MAML's: the gradient of `objective` (scaled as the
        compiled optimizer's loss scale asks).
        """
        del fast
        return tape.gradient(
            self.optimizer.scale_loss(objective),
            params + meta_values,
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )

    # ------------------------------------------------------------------
    # One task, and the meta-batch.

    @property
    def meta_variables(self):
        """Meta-learned variables besides the model's: the rule's and the member's."""
        self._require_inner_loop()
        return self.inner_optimizer.variables + list(self.member_variables)

    def _require_inner_loop(self):
        if self.inner_loop is None:
            raise ValueError(
                f"The meta-learner is not built: the wrapped model {self.model.name!r} has no "
                "weights yet. Hand episodes to fit/evaluate first, or give it an Input."
            )

    @contextlib.contextmanager
    def _reading(self, meta_values):
        """Within: the meta variables read as `meta_values`, tensors a tape may watch."""
        if not meta_values:
            yield
            return
        mapping = list(zip(self.meta_variables, meta_values))
        with keras.StatelessScope(state_mapping=mapping, initialize_variables=False):
            yield

    def _task(self, task, params, state, meta_values, steps, first_order, with_gradients,
              served=False):
        """One task: `(state, meta_gradients, losses, predictions)`.

        `losses`: the query loss after adaptation and before it, and each
        output's after adaptation (Keras' `<output>_loss`, for several
        outputs); `predictions`: the query predictions after adaptation.
        With `served`, also the loss and predictions of each query predicted
        on its own with the support set's statistics (`served_loss`,
        `served_predictions`).
        """
        support_x, support_y, query_x, query_y, support_weight, query_weight = (
            episodes.task_parts(task))
        with self._reading(meta_values):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                if with_gradients and self.differentiates_adaptation:
                    tape.watch(params + meta_values)  # otherwise the tape records nothing
                start = self.starting_weights(params, state, support_x, support_y,
                                              support_weight)
                with tape.stop_recording():
                    pre_pred, pre_extra = self.inner_loop.predict(
                        start, state, support_x, query_x, self.transductive,
                        support_weights=support_weight, weights=query_weight,
                    )
                    pre_loss = self.task_loss(query_x, query_y, pre_pred, pre_extra,
                                              query_weight, with_gradients)
                fast, state, y_pred, loss, objective = self.task_objective(
                    task, start, state, steps, first_order, with_gradients
                )
            losses = {"loss": loss, "pre_adaptation_loss": pre_loss}
            if compiled_loss.trackers(compile_loss(self)):  # several outputs: each one's loss
                losses.update(
                    compiled_loss.losses(compile_loss(self), query_y, y_pred, query_weight)[1])
            predictions = {"predictions": y_pred}
            if served:
                served_pred, served_extra = self.inner_loop.predict(
                    fast, state, support_x, query_x, False, last_step(steps), support_weight
                )
                losses["served_loss"] = self.task_loss(query_x, query_y, served_pred,
                                                        served_extra, query_weight, False)
                predictions["served_predictions"] = served_pred
        grads = []
        if with_gradients:
            grads = self.task_meta_gradients(tape, objective, params, meta_values, fast)
        return state, grads, losses, predictions

    def _read_values(self):
        """The current variables as tensors: (params, state, meta_values)."""
        params, state = self.inner_loop.current_values()
        return params, state, [tf.convert_to_tensor(v) for v in self.meta_variables]

    def _run_tasks(self, support, query, steps, first_order, with_gradients, served=False,
                   weights=None):
        """The meta-batch's tasks; `weights`: `(support_weight, query_weight)` or None."""
        query_x = query[0]
        params, state, meta_values = self._read_values()
        served_names = ["served_loss"] if served else []
        sums = (["loss", "pre_adaptation_loss"]
                + [m.name for m in compiled_loss.trackers(compile_loss(self))] + served_names)
        dtypes = self._prediction_dtypes(query_x)
        result = task_loop_lib.run_tasks(
            lambda task, state: self._task(
                task, params, state, meta_values, steps, first_order, with_gradients, served
            ),
            episodes.task_tuple(support, query, weights),
            state,
            [tf.zeros_like(v) for v in params + meta_values] if with_gradients else [],
            sums,
            {"predictions": dtypes, **({"served_predictions": dtypes} if served else {})},
            self._loss_dtype,
            self.task_loop,
            self.parallel_tasks,
        )
        count = tf.cast(result["num_tasks"], self._loss_dtype)
        # Mean over tasks; Keras sums replicas' gradients under tf.distribute.
        scale = scale_loss_for_distribution(1.0 / count)
        result["grads"] = [g * tf.cast(scale, g.dtype) for g in result["grads"]]
        for name in sums:
            result[name] /= count
        return result

    def _prediction_dtypes(self, query_x):
        """The dtype of each output for `query_x` ([tasks, examples, ...], nested)."""
        outputs = self.inner_loop.output_spec(episodes.per_example(query_x))
        return tf.nest.map_structure(lambda output: tf.as_dtype(output.dtype), outputs)

    @property
    def _loss_dtype(self):
        return tf.float64 if keras.config.floatx() == "float64" else tf.float32
