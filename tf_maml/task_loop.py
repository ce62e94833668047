"""The task loop: a meta-batch's tasks one after another, their results summed.

Tasks run in a `tf.while_loop` (one task traced, so the first step comes
within seconds, and memory holds one task's second-order graph per task in
flight) or unrolled into the graph. The loop knows nothing of MAML: it gets
a per-task function and sums what it returns.
"""

import numpy as np
import tensorflow as tf

TASK_LOOPS = ("auto", "while", "unrolled")

# Input values per task (support + query examples x example size) up to which
# running many tasks at once pays on CPU; measured in docs/benchmarks.md.
_SMALL_TASK_VALUES = 16_384


def auto_parallel_tasks(support_shape, query_shape):
    """How many tasks of a meta-batch the while loop runs at once, by default.

    On a 2-core CPU (docs/benchmarks.md), 10 tasks at once (TensorFlow's
    default) were fastest for tasks of 10 Omniglot images, and 4 for tasks
    of 40 or 80 images, whose activations no longer share the caches well.
    Elsewhere (GPUs), TensorFlow's default.
    """
    if tf.config.list_logical_devices("GPU"):
        return 10
    examples = (support_shape[1] or 0) + (query_shape[1] or 0)
    values = examples * int(np.prod([d or 1 for d in support_shape[2:]]))
    return 10 if values <= _SMALL_TASK_VALUES else 4


def run_tasks(task_fn, tasks, state, grads, sum_dtype, prediction_dtype, task_loop="auto",
              parallel_tasks="auto"):
    """Runs `task_fn` on every task of a meta-batch.

    Args:
        task_fn: `(task, state) -> (state, grads, loss, pre_loss, predictions)`
            for one task `(support_x, support_y, query_x, query_y)`; `state`
            (the model's non-trainable values) is carried from task to task.
        tasks: the meta-batch `(support_x, support_y, query_x, query_y)`, each
            with a leading task axis.
        state: the model's non-trainable values before the first task.
        grads: zeros shaped as the meta-gradient (an empty list for none).
        sum_dtype: the dtype the losses are summed in.
        prediction_dtype: the dtype of the query predictions.
        task_loop, parallel_tasks: as `MAML`.

    Returns:
        A dict: `state` after the last task, `grads`, `loss` and
        `pre_adaptation_loss` summed over tasks, `predictions` stacked, and
        `num_tasks`.
    """
    support_x, query_x = tasks[0], tasks[2]
    num_tasks = tf.shape(support_x)[0]
    zero = tf.zeros((), sum_dtype)

    def body(t, state, grads, post_sum, pre_sum, predictions):
        state, task_grads, loss, pre_loss, y_pred = task_fn([part[t] for part in tasks], state)
        return (
            t + 1,
            state,
            [g + tg for g, tg in zip(grads, task_grads)],
            post_sum + tf.cast(loss, sum_dtype),
            pre_sum + tf.cast(pre_loss, sum_dtype),
            predictions.write(t, y_pred),
        )

    predictions = tf.TensorArray(prediction_dtype, size=num_tasks)
    loop_vars = (tf.constant(0), state, grads, zero, zero, predictions)
    if task_loop == "unrolled":
        if support_x.shape[0] is None:
            raise ValueError(
                "task_loop='unrolled' needs a fixed number of tasks per meta-batch "
                "(batch the episodes with drop_remainder=True), or use task_loop='while'."
            )
        for _ in range(support_x.shape[0]):
            loop_vars = body(*loop_vars)
    else:
        if parallel_tasks == "auto":
            parallel_tasks = auto_parallel_tasks(support_x.shape, query_x.shape)
        loop_vars = tf.while_loop(
            lambda t, *_: t < num_tasks, body, loop_vars, parallel_iterations=parallel_tasks
        )
    _, state, grads, post_sum, pre_sum, predictions = loop_vars
    return {
        "state": state,
        "grads": grads,
        "loss": post_sum,
        "pre_adaptation_loss": pre_sum,
        "predictions": predictions.stack(),
        "num_tasks": num_tasks,
    }
