"""The steps of `tf_maml.MAML` that Keras runs: `train_step`, `test_step`, `predict_step`.

Each step checks its episode batch inside the graph (`tf_maml.guards`),
runs the meta-batch's tasks (`MetaObjective.run_tasks`), and applies the
update or records the metrics; a fault skips the update and is raised after
the step.
"""

import keras
import tensorflow as tf

from tf_maml.engine import compiled_loss
from tf_maml.learners import guards
from tf_maml.learners import entry_checks
from tf_maml import episodes as episodes_lib
from tf_maml.learners import labels as labels_lib
from tf_maml.engine.inner_loop import last_step
from tf_maml.keras_patches import (
    compile_loss, compile_metrics, is_multi_worker, loss_tracker, update_compile_metrics,
)


class MetaSteps:
    """Mixed into `MAML`: Keras' train, test and predict steps over episode batches."""

    def _update_metrics(self, query_y, result, query_weight=None):
        loss_tracker(self).update_state(result["loss"], sample_weight=result["num_tasks"])
        self.pre_adaptation_loss_tracker.update_state(
            result["pre_adaptation_loss"], sample_weight=result["num_tasks"]
        )
        for tracker in compiled_loss.trackers(compile_loss(self)):  # each output's loss
            tracker.update_state(result[tracker.name], sample_weight=result["num_tasks"])
        if compile_metrics(self) is not None:
            update_compile_metrics(
                compile_metrics(self),
                episodes_lib.merge_task_axis(query_y),
                episodes_lib.merge_task_axis(result["predictions"]),
                None if query_weight is None else episodes_lib.merge_task_axis(query_weight),
            )
        logs = {**self.get_metrics_result(), **self._served_logs(query_y, result, query_weight)}
        if is_multi_worker(self.distribute_strategy):
            # Keras reduces logs across workers with a mean over axis 0, which
            # scalars lack (Keras 3.15): give them that axis.
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def _checked_episode(self, data):
        """`(support, query, weights, faults)`: see `guards.checked_episode`; `weights` is
        `(support_weight, query_weight)` or None; `faults` are `StepGuard.record`'s, the
        empty sets, bad labels and non-finite input (or negative weights) of the batch."""
        support, query, weights = episodes_lib.unpack(data)
        query_x, query_y = query
        # Episodes read from a generator reach the step unchecked: build here, eagerly.
        entry_checks.build_loss_and_metrics(
            self, episodes_lib.per_example(query_x), episodes_lib.per_example(query_y)
        )
        pairs = self._labelled_outputs(
            episodes_lib.per_example(query_x), episodes_lib.per_example(query_y), "query_y"
        )
        bad_input, input_detail = self._guard.input_fault(
            _named_inputs(support, query, weights or (None, None)))
        support, query, weights, empty, bad_labels, detail = guards.checked_episode(
            support, query, labels_lib.classes(pairs), weights)
        faults = [(guards.INPUT, bad_input, input_detail), (guards.EMPTY, empty, detail),
                  (guards.LABELS, bad_labels, detail)]
        return support, query, weights, faults

    def _apply_update(self, variables, gradients, state):
        self.optimizer.apply_gradients(zip(gradients, variables))
        for variable, value in zip(self.model.non_trainable_variables, state):
            variable.assign(value)

    def train_step(self, data):
        support, query, weights, faults = self._checked_episode(data)
        result = self._run_tasks(
            support, query, self.inner_steps, self.first_order, with_gradients=True,
            weights=weights,
        )
        variables = self.model.trainable_variables + self.meta_variables
        gradients = dict(zip(map(id, variables), result["grads"]))
        # In Keras' order of trainable_variables, the order in which a loaded
        # model rebuilds the optimizer's slots.
        variables = [v for v in self.trainable_variables if id(v) in gradients]
        gradients = [gradients[id(v)] for v in variables]
        finite = guards.all_finite(gradients + [result["loss"]])
        ok = self._guard.record(self.optimizer.iterations + 1, *faults,
                                guards.nonfinite_fault(finite))
        guards.run_if(ok, self._apply_update, variables, gradients, result["state"])
        return self._update_metrics(query[1], result, None if weights is None else weights[1])

    def test_step(self, data):
        # Evaluation leaves the model as it was: moving statistics and RNG
        # seeds are not written back.
        support, query, weights, faults = self._checked_episode(data)
        result = self._run_tasks(support, query, self.eval_inner_steps, True,
                                 with_gradients=False, served=self.transductive,
                                 weights=weights)
        finite = tf.reduce_all(tf.math.is_finite(result["loss"]))
        self._guard.record(0, *faults, guards.nonfinite_fault(finite))
        return self._update_metrics(query[1], result, None if weights is None else weights[1])

    def predict_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if y is not None:  # full episodes: ((sx, sy[, sw]), (qx, qy[, qw]))
            support, query_x = x, y[0]
            query_weight = episodes_lib.as_weights(y[2] if len(y) == 3 else None)
        else:  # ((sx, sy[, sw]), qx): padded queries need full episodes (their weights)
            support, query_x = x
            query_weight = None
        support_weight = episodes_lib.as_weights(support[2] if len(support) == 3 else None)
        params, state = self.inner_loop.current_values()
        steps = self.eval_inner_steps

        def one_task(task):
            sx, sy, qx, sw, qw = task
            start = self.starting_weights(params, state, sx, sy, sw)
            fast, new_state, _ = self.inner_loop.adapt(start, state, sx, sy, steps, True,
                                                       weights=sw)
            y_pred, _ = self.inner_loop.predict(
                fast, new_state, sx, qx, self.transductive, last_step(steps), sw, qw
            )
            return y_pred

        tasks = (support[0], support[1], query_x, support_weight, query_weight)
        present = [i for i, t in enumerate(tasks) if t is not None]

        def from_present(values):  # map_fn takes no None: absent weights stay None
            full = [None] * len(tasks)
            for i, value in zip(present, values):
                full[i] = value
            return one_task(full)

        bad_input, detail = self._guard.input_fault(_named_inputs(
            (support[0], support[1]), (query_x, None), (support_weight, query_weight)))
        predictions = tf.map_fn(
            from_present,
            tuple(tasks[i] for i in present),
            fn_output_signature=self._prediction_dtypes(query_x),
        )
        finite = tf.constant(True)
        for leaf in tf.nest.flatten(predictions):
            if leaf.dtype.is_floating:
                finite = finite & tf.reduce_all(tf.math.is_finite(leaf))
        self._guard.record(0, (guards.INPUT, bad_input, detail),
                           guards.nonfinite_fault(finite))
        return predictions


def _named_inputs(support, query, weights):
    """`(name, tensor, is_weight)` of an episode batch's tensors, for `guards.input_fault`."""
    named = []
    for root, structure in (("support_x", support[0]), ("support_y", support[1]),
                            ("query_x", query[0]), ("query_y", query[1])):
        if structure is not None:
            named += [(name, value, False)
                      for name, value in episodes_lib.named_leaves(structure, root)]
    for name, weight in zip(("support_weight", "query_weight"), weights):
        if weight is not None:
            named.append((name, episodes_lib.as_weights(weight), True))
    return named
