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


def run_tasks(task_fn, tasks, state, grads, sums, stacks, sum_dtype, stack_dtype,
              task_loop="auto", parallel_tasks="auto"):
    """Runs `task_fn` on every task of a meta-batch.

    Args:
        task_fn: `(task, state) -> (state, grads, sums, stacks)` for one task
            `(support_x, support_y, query_x, query_y)`: `sums` a dict of
            scalars (losses) to add up over tasks, `stacks` a dict of tensors
            (query predictions) to stack; `state` (the model's non-trainable
            values) is carried from task to task.
        tasks: the meta-batch `(support_x, support_y, query_x, query_y)`, each
            with a leading task axis.
        state: the model's non-trainable values before the first task.
        grads: zeros shaped as the meta-gradient (an empty list for none).
        sums, stacks: the names of the values `task_fn` returns.
        sum_dtype: the dtype the sums are added up in.
        stack_dtype: the dtype of the stacked values.
        task_loop, parallel_tasks: as `MAML`.

    Returns:
        A dict: `state` after the last task, `grads` summed over tasks, each
        of `sums` summed, each of `stacks` stacked, and `num_tasks`.
    """
    support_x, query_x = tasks[0], tasks[2]
    num_tasks = tf.shape(support_x)[0]

    def body(t, state, grads, totals, stacked):
        state, task_grads, task_sums, task_stacks = task_fn([part[t] for part in tasks], state)
        return (
            t + 1,
            state,
            [g + tg for g, tg in zip(grads, task_grads)],
            {k: totals[k] + tf.cast(task_sums[k], sum_dtype) for k in sums},
            {k: stacked[k].write(t, task_stacks[k]) for k in stacks},
        )

    totals = {k: tf.zeros((), sum_dtype) for k in sums}
    stacked = {k: tf.TensorArray(stack_dtype, size=num_tasks) for k in stacks}
    loop_vars = (tf.constant(0), state, grads, totals, stacked)
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
    _, state, grads, totals, stacked = loop_vars
    return {
        "state": state,
        "grads": grads,
        **totals,
        **{k: array.stack() for k, array in stacked.items()},
        "num_tasks": num_tasks,
    }
