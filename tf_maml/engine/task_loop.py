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


def auto_parallel_tasks(support_x, query_x):
    """How many tasks of a meta-batch the while loop runs at once, by default.

    `support_x`, `query_x`: the meta-batch's examples (tensors or specs,
    nested for several inputs), `[tasks, examples, *features]` each.

    On a 2-core CPU (docs/benchmarks.md), 10 tasks at once (TensorFlow's
    default) were fastest for tasks of 10 Omniglot images, and 4 for tasks
    of 40 or 80 images, whose activations no longer share the caches well.
    Elsewhere (GPUs), TensorFlow's default.
    """
    if tf.config.list_logical_devices("GPU"):
        return 10
    values = sum(
        (shape[1] or 0) * int(np.prod([d or 1 for d in shape[2:]]))
        for shape in (tuple(t.shape) for t in tf.nest.flatten([support_x, query_x]))
    )
    return 10 if values <= _SMALL_TASK_VALUES else 4


def run_tasks(task_fn, tasks, state, grads, sums, stacks, sum_dtype, task_loop="auto",
              parallel_tasks="auto"):
    """Runs `task_fn` on every task of a meta-batch.

    Args:
        task_fn: `(task, state) -> (state, grads, sums, stacks)` for one task
            `(support_x, support_y, query_x, query_y)`: `sums` a dict of
            scalars (losses) to add up over tasks, `stacks` a dict of tensors
            (query predictions) to stack; `state` (the model's non-trainable
            values) is carried from task to task.
        tasks: the meta-batch `(support_x, support_y, query_x, query_y)`, and
            `support_weight, query_weight` for padded episodes, each with a
            leading task axis (each may be nested); any tuple of such parts
            (the first not empty) with `parallel_tasks` given.
        state: the model's non-trainable values before the first task.
        grads: zeros shaped as the meta-gradient (an empty list for none).
        sums: the names of the sums `task_fn` returns.
        stacks: a dict from the name of each stacked value `task_fn` returns
            to its dtype (nested like the value).
        sum_dtype: the dtype the sums are added up in.
        task_loop, parallel_tasks: as `MAML`.

    Returns:
        A dict: `state` after the last task, `grads` summed over tasks, each
        of `sums` summed, each of `stacks` stacked, and `num_tasks`.
    """
    first = tf.nest.flatten(tasks[0])[0]
    num_tasks = tf.shape(first)[0]

    def body(t, state, grads, totals, stacked):
        task = [tf.nest.map_structure(lambda part: part[t], part) for part in tasks]
        state, task_grads, task_sums, task_stacks = task_fn(task, state)
        return (
            t + 1,
            state,
            [g + tg for g, tg in zip(grads, task_grads)],
            {k: totals[k] + tf.cast(task_sums[k], sum_dtype) for k in sums},
            {k: tf.nest.map_structure(lambda array, value: array.write(t, value),
                                      stacked[k], task_stacks[k]) for k in stacks},
        )

    totals = {k: tf.zeros((), sum_dtype) for k in sums}
    stacked = {
        k: tf.nest.map_structure(lambda dtype: tf.TensorArray(dtype, size=num_tasks), dtypes)
        for k, dtypes in stacks.items()
    }
    loop_vars = (tf.constant(0), state, grads, totals, stacked)
    if task_loop == "unrolled":
        if first.shape[0] is None:
            raise ValueError(
                "task_loop='unrolled' needs a fixed number of tasks per meta-batch "
                "(batch the episodes with drop_remainder=True), or use task_loop='while'."
            )
        for _ in range(first.shape[0]):
            loop_vars = body(*loop_vars)
    else:
        if parallel_tasks == "auto":
            parallel_tasks = auto_parallel_tasks(tasks[0], tasks[2])
        loop_vars = tf.while_loop(
            lambda t, *_: t < num_tasks, body, loop_vars, parallel_iterations=parallel_tasks
        )
    _, state, grads, totals, stacked = loop_vars
    return {
        "state": state,
        "grads": grads,
        **totals,
        **{k: tf.nest.map_structure(lambda array: array.stack(), arrays)
           for k, arrays in stacked.items()},
        "num_tasks": num_tasks,
    }
