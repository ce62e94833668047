"""MAML as a `keras.Model`: `fit` meta-trains, `evaluate` reports few-shot results."""

import contextlib
import functools

import keras
import numpy as np
import tensorflow as tf
from keras.src import backend as keras_backend
from keras.src.backend.tensorflow import trainer as keras_tf_trainer
from keras.src.losses import loss as loss_module

from tf_maml import adaptation, guards, support_statistics
from tf_maml import episodes as episodes_lib
from tf_maml.exact_gradients import exact_second_order
from tf_maml.fused_batch_norm import fused_kernels


def _merge_task_axis(tensor):
    """[tasks, examples, ...] -> [tasks * examples, ...]."""
    return tf.reshape(tensor, tf.concat([[-1], tf.shape(tensor)[2:]], axis=0))


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


@keras.saving.register_keras_serializable(package="tf_maml")
class MAML(keras.Model):
    """Model-Agnostic Meta-Learning (Finn et al., 2017) for any Keras model.

    Wraps a Keras model (Sequential, functional or subclassed) and meta-trains
    that model's own variables: after `fit`, `model` holds the meta-learned
    initialization. For every task of an episode batch `train_step` takes
    `inner_steps` plain SGD steps of size `inner_lr` on the support set with
    the compiled loss, evaluates the compiled loss on the query set with the
    adapted weights, and applies the compiled optimizer to the gradient of the
    mean over tasks of those query losses (differentiating through the inner
    steps unless `first_order`).

    Logged metrics: `loss`, the query loss after adaptation (the meta-loss);
    `pre_adaptation_loss`, the query loss with the meta-learned initialization;
    and the compiled metrics on the query predictions after adaptation.
    `evaluate` and `fit(validation_data=...)` adapt with `eval_inner_steps`
    and report the same, without an outer update.

    Episodes are `((support_x, support_y), (query_x, query_y))` with a leading
    task axis (see `tf_maml.episodes`).

    BatchNormalization: with `transductive=True` (the papers' protocol) every
    forward pass, queries included, runs in training mode and normalizes with
    the statistics of the batch at hand. With `transductive=False`, query
    predictions run in inference mode and normalize with the support set's
    statistics under the adapted weights, so each query is predicted on its
    own; `adapt` and `export_adaptive` always do this.

    Second derivatives are exact for stock Keras layers, BatchNormalization
    and max-pooling under XLA included (see `tf_maml.exact_gradients`).

    Args:
        model: the `keras.Model` to meta-train.
        inner_lr: step size of the inner SGD steps.
        inner_steps: inner steps per task during meta-training.
        first_order: if True, treat the inner gradients as constants
            (FOMAML): cheaper, no second derivatives.
        eval_inner_steps: inner steps in `evaluate`, `predict` and `adapt`;
            defaults to `inner_steps`.
        transductive: BatchNorm statistics of the query batch (True) or of
            the support set (False) for query predictions.
        task_loop: how a step runs the tasks of a meta-batch: `"while"` (a
            `tf.while_loop`, one task traced), `"unrolled"` (every task traced
            into the graph; needs a fixed meta-batch size, traces slowly), or
            `"auto"` (the while loop; see docs/benchmarks.md for the
            measurements behind it).
        parallel_tasks: how many tasks the while loop may run at once
            (`parallel_iterations`), or `"auto"` to choose from the device
            and the size of a task.
        recompute_inner_steps: if True, the meta-gradient recomputes each
            inner step instead of keeping its activations: less memory for
            long second-order inner loops, at the cost of one more forward
            and inner backward pass per step.
        fused_batch_norm: if True, BatchNormalization layers run TensorFlow's
            fused kernels in steps that XLA does not compile (the result is
            the same to float rounding; see `tf_maml.fused_batch_norm`).
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:

    ```python
    net = tf_maml.nets.mlp(hidden=(40, 40), outputs=1)
    maml = tf_maml.MAML(net, inner_lr=0.01, inner_steps=1)
    maml.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    episodes = tf_maml.data.sinusoid_episodes(shots=10, meta_batch_size=25)
    maml.fit(episodes, steps_per_epoch=100, epochs=5)
    adapted = maml.adapt(support_x, support_y, steps=10)   # a keras.Model
    ```
    """

    def __init__(
        self,
        model,
        inner_lr=0.4,
        inner_steps=1,
        first_order=False,
        eval_inner_steps=None,
        transductive=True,
        task_loop="auto",
        parallel_tasks="auto",
        recompute_inner_steps=False,
        fused_batch_norm=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"`model` must be a keras.Model; received {type(model).__name__}."
            )
        try:
            inner_lr = float(inner_lr)
        except (TypeError, ValueError):
            raise ValueError(
                f"`inner_lr` must be a positive number; received {inner_lr!r}."
            ) from None
        if not np.isfinite(inner_lr) or inner_lr <= 0:
            raise ValueError(f"`inner_lr` must be a positive number; received {inner_lr}.")
        if not isinstance(inner_steps, (int, np.integer)) or inner_steps < 1:
            raise ValueError(f"`inner_steps` must be an integer >= 1; received {inner_steps!r}.")
        if eval_inner_steps is None:
            eval_inner_steps = inner_steps
        if not isinstance(eval_inner_steps, (int, np.integer)) or eval_inner_steps < 0:
            raise ValueError(
                f"`eval_inner_steps` must be an integer >= 0; received {eval_inner_steps!r}."
            )
        if task_loop not in TASK_LOOPS:
            raise ValueError(f"`task_loop` must be one of {TASK_LOOPS}; received {task_loop!r}.")
        if parallel_tasks != "auto" and (
            not isinstance(parallel_tasks, (int, np.integer)) or parallel_tasks < 1
        ):
            raise ValueError(
                f"`parallel_tasks` must be 'auto' or an integer >= 1; received {parallel_tasks!r}."
            )
        self.model = model
        self.inner_lr = inner_lr
        self.inner_steps = int(inner_steps)
        self.first_order = bool(first_order)
        self.eval_inner_steps = int(eval_inner_steps)
        self.transductive = bool(transductive)
        self.task_loop = task_loop
        self.parallel_tasks = parallel_tasks if parallel_tasks == "auto" else int(parallel_tasks)
        self.recompute_inner_steps = bool(recompute_inner_steps)
        self.fused_batch_norm = bool(fused_batch_norm)
        self.pre_adaptation_loss_tracker = keras.metrics.Mean(name="pre_adaptation_loss")
        # What the episodes look like, learnt from the first data handed over
        # (or a saved build config): example shape, input and label specs.
        self._episode_spec = None
        # Faults of a step (NaN, bad labels, empty sets); not a weight, never saved.
        self._guard = guards.StepGuard()

    # ------------------------------------------------------------------
    # Keras plumbing: build, call, config.

    def build(self, input_shape):
        """Builds the wrapped model for examples of `input_shape` ([batch, ...])."""
        if not self.model.built:
            keras_backend.compute_output_spec(
                self.model, keras.KerasTensor(tuple(input_shape)), training=False
            )

    def call(self, inputs, training=None):
        """The wrapped model's predictions with the meta-learned weights."""
        return self.model(inputs, training=training)

    def get_build_config(self):
        if self._episode_spec is None:
            return super().get_build_config()
        spec = self._episode_spec
        return {
            "episodes": {
                "features": list(spec.features),
                "x_dtype": spec.x_dtype.name,
                "label_shape": list(spec.label_shape),
                "label_dtype": spec.label_dtype.name,
            }
        }

    def build_from_config(self, config):
        if "episodes" not in config:
            return super().build_from_config(config)
        spec = config["episodes"]
        self._episode_spec = episodes_lib.EpisodeSpec(
            num_tasks=None,
            features=tuple(spec["features"]),
            x_dtype=tf.as_dtype(spec["x_dtype"]),
            label_shape=tuple(spec["label_shape"]),
            label_dtype=tf.as_dtype(spec["label_dtype"]),
        )
        self.build((None,) + self._episode_spec.features)

    @property
    def example_shape(self):
        """Shape of one example, from the episodes seen or the model's input."""
        if self._episode_spec is not None:
            return self._episode_spec.features
        inputs = getattr(self.model, "inputs", None)
        if inputs and len(inputs) == 1:
            return tuple(inputs[0].shape[1:])
        raise ValueError(
            f"The example shape of {self.model.name!r} is unknown: hand episodes to "
            "fit/evaluate first, or give the wrapped model an Input."
        )

    @property
    def input_dtype(self):
        if self._episode_spec is not None:
            return self._episode_spec.x_dtype
        return tf.as_dtype(self.model.compute_dtype)

    @property
    def label_spec(self):
        """`(shape, dtype)` of one label, from the episodes seen."""
        if self._episode_spec is None:
            raise ValueError(
                "The label format is unknown: call fit() or evaluate() on episodes first."
            )
        return self._episode_spec.label_shape, self._episode_spec.label_dtype

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "model": keras.saving.serialize_keras_object(self.model),
            "inner_lr": self.inner_lr,
            "inner_steps": self.inner_steps,
            "first_order": self.first_order,
            "eval_inner_steps": self.eval_inner_steps,
            "transductive": self.transductive,
            "task_loop": self.task_loop,
            "parallel_tasks": self.parallel_tasks,
            "recompute_inner_steps": self.recompute_inner_steps,
            "fused_batch_norm": self.fused_batch_norm,
        }

    # Keras saves no RNG seed state (Dropout's seed generators are outside
    # `weights`): without it, a reloaded meta-learner or a resumed run would
    # draw other dropout masks than the one saved. Saved beside MAML's own
    # variables as `rng_<i>`.
    def _unsaved_state(self):
        saved = {id(v) for v in self.model.weights}
        return [v for v in self.model.non_trainable_variables if id(v) not in saved]

    def save_own_variables(self, store):
        super().save_own_variables(store)
        for i, variable in enumerate(self._unsaved_state()):
            store[f"rng_{i}"] = variable

    def load_own_variables(self, store):
        keys = list(store.keys())
        super().load_own_variables({k: store[k] for k in keys if not k.startswith("rng_")})
        for i, variable in enumerate(self._unsaved_state()):
            if f"rng_{i}" in keys:  # files written before tf_maml saved it have none
                variable.assign(store[f"rng_{i}"])

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects
        )
        return cls(model, **config)

    # ------------------------------------------------------------------
    # Checks run once when episodes are handed over, before any compute.

    def _prepare(self, x, y=None, name="episodes", check_labels=True):
        """Checks episodes against the model and builds what Keras would build.

        Keras' own automatic build would read `(support_x, support_y)` as the
        model input, so the model, compiled loss and metrics are built here
        from per-example specs instead.
        """
        if self.compiled and (self._compile_loss is None or self.loss is None):
            raise ValueError(
                "The meta-learner was compiled without a loss; both the inner and the outer "
                "loop minimize it. Pass one: compile(optimizer=..., loss=...)."
            )
        spec = episodes_lib.spec_of(x, y)
        if spec is None:
            return
        episode = episodes_lib.check_spec(spec, name=name)
        example_shape = (None,) + episode.features
        if not self.built:
            self.build(example_shape)
        try:
            output = keras_backend.compute_output_spec(
                self.model,
                keras.KerasTensor(example_shape, episode.x_dtype.name),
                training=False,
            )
        except Exception as error:
            raise ValueError(
                f"{name}: examples of shape {episode.features} ({episode.x_dtype.name}) do "
                f"not fit the wrapped model {self.model.name!r}: {error}"
            ) from error
        if tf.nest.is_nested(output):
            raise ValueError(
                f"The wrapped model must have a single output; {self.model.name!r} returns "
                f"{tf.nest.map_structure(lambda t: t.shape, output)}."
            )
        episodes_lib.check_labels_fit_outputs(episode, output.shape, name=name)
        if self.compiled:
            episodes_lib.check_labels_fit_loss(episode, output.shape, self.loss, name=name)
        num_classes = output.shape[-1]
        if check_labels and episode.label_dtype.is_integer and num_classes and num_classes > 1:
            for labels in episodes_lib.first_labels(x, y):
                episodes_lib.check_label_range(labels, num_classes, name=name)
        if self._episode_spec is None:  # the first episodes that pass every check
            self._episode_spec = episode
        if self.compiled:
            labels = keras.KerasTensor((None,) + episode.label_shape, episode.label_dtype.name)
            if self._compile_loss is not None and not self._compile_loss.built:
                keras_backend.compute_output_spec(self._compute_loss, None, labels, output)
            if self._compile_metrics is not None and not self._compile_metrics.built:
                keras_backend.compute_output_spec(self.compute_metrics, None, labels, output)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # `_prepare` built the model, loss and metrics from per-example specs.
        # Keras' own symbolic build would read a batch (under tf.distribute,
        # reduce it across replicas, which fails for MultiWorkerMirrored) and
        # take (support_x, support_y) for the model input: only the optimizer
        # is left to build.
        ready = self.built and all(
            part is None or part.built for part in (self._compile_loss, self._compile_metrics)
        )
        if not ready:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def _divergence_hint(self):
        """The likely causes of a non-finite loss, for the error message."""
        return (
            f"Likely cause: inner steps too large for the loss (inner_lr={self.inner_lr}, "
            f"{self.inner_steps} inner steps in training, {self.eval_inner_steps} in "
            "evaluation), or an outer learning rate too large. Lower them; learned step "
            "sizes (Meta-SGD, MAML++) learned for few steps can diverge over more: "
            "evaluate with eval_inner_steps equal to inner_steps."
        )

    def _with_fault_callback(self, kwargs):
        if kwargs.get("_use_cached_eval_dataset"):  # validation inside fit: its callbacks
            return kwargs
        callbacks = list(kwargs.get("callbacks") or [])
        kwargs["callbacks"] = [guards.RaiseOnFault(self._guard, self._divergence_hint)] + callbacks
        return kwargs

    def _raise_if_fault(self, phase, call):
        self._guard.reset()
        result = call()
        self._guard.raise_if_fault(phase, self._divergence_hint())
        return result

    def fit(self, x=None, y=None, *args, **kwargs):
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # a dataset shuffles itself
        self._prepare(x, y)
        validation_data = kwargs.get("validation_data")
        if isinstance(validation_data, tf.data.Dataset):
            self._prepare(validation_data, name="validation_data")
        elif isinstance(validation_data, (tuple, list)):
            self._prepare(*validation_data[:2], name="validation_data")
        # Other validation data (generators, PyDataset) is read as Keras reads it.
        return super().fit(x, y, *args, **self._with_fault_callback(kwargs))

    def evaluate(self, x=None, y=None, *args, **kwargs):
        if not kwargs.get("_use_cached_eval_dataset"):
            self._prepare(x, y)
        return super().evaluate(x, y, *args, **self._with_fault_callback(kwargs))

    def train_on_batch(self, x=None, y=None, *args, **kwargs):
        self._prepare(x, y)
        return self._raise_if_fault(
            "train", lambda: super(MAML, self).train_on_batch(x, y, *args, **kwargs)
        )

    def test_on_batch(self, x=None, y=None, *args, **kwargs):
        self._prepare(x, y)
        return self._raise_if_fault(
            "evaluation", lambda: super(MAML, self).test_on_batch(x, y, *args, **kwargs)
        )

    def predict(self, x, *args, **kwargs):
        """Query predictions after adaptation, `[tasks, query_examples, ...]`.

        `x`: episodes as for `evaluate` (query labels are ignored), or
        `((support_x, support_y), query_x)` arrays.
        """
        if isinstance(x, tf.data.Dataset):
            self._prepare(x, check_labels=False)
        return super().predict(x, *args, **kwargs)

    # ------------------------------------------------------------------
    # The computation of one task.

    @property
    def _batch_norm_layers(self):
        return support_statistics.batch_norm_layers(self.model)

    def _loss(self, y, y_pred, extra_losses):
        """The compiled loss of one task, plus regularization losses."""
        # Keras scales losses by 1 / replicas under tf.distribute; a task's
        # loss must not depend on how many replicas share the meta-batch.
        loss = loss_module.unscale_loss_for_distribution(self._compile_loss(y, y_pred))
        if extra_losses:
            loss += tf.add_n([tf.cast(tf.reduce_sum(e), loss.dtype) for e in extra_losses])
        return loss

    def _forward(self, params, state, x, training):
        """`(outputs, state, losses)` of the wrapped model under `params`."""
        kwargs = {"training": training} if self.model._call_has_training_arg else {}
        return self.model.stateless_call(params, state, x, return_losses=True, **kwargs)

    # Extension points of the MAML family (see MetaSGD, ANIL).

    @property
    def _inner_variables(self):
        """Meta-trained variables of the inner loop itself (e.g. learned step sizes)."""
        return []

    @property
    def _adapted_indices(self):
        """Indices into the model's trainable variables that the inner loop adapts."""
        return range(len(self.model.trainable_variables))

    def _inner_slots(self, params):
        """Initial state of a stateful inner optimizer (e.g. Adam moments); none for SGD."""
        del params
        return []

    def _inner_update(self, params, grads, inner, step, slots):
        """One inner step over the adapted params: returns `(params, slots)`.

        MAML: plain SGD, `params - inner_lr * grads`.
        """
        del inner, step
        return [p - self.inner_lr * g for p, g in zip(params, grads)], slots

    def _task_objective(self, params, inner, state, task, steps, first_order, training):
        """Adapts to one task; returns `(fast, state, query_pred, query_loss, objective)`.

        `objective` is what the meta-gradient differentiates: MAML's query
        loss after the last step (MAML++: a weighted sum over steps).
        """
        del training
        sx, sy, qx, qy = task
        fast, state = self._adapt_task(params, state, sx, sy, steps, first_order, inner)
        y_pred, extra = self._predict_query(
            fast, state, sx, qx, self.transductive, inner, self._last_step(steps)
        )
        loss = self._loss(qy, y_pred, extra)
        return fast, state, y_pred, loss, loss

    # Whether the meta-gradient is differentiated through the adaptation;
    # Reptile's is not.
    _meta_gradient_from_tape = True

    def _task_meta_gradients(self, tape, loss, params, inner, fast):
        """One task's contribution to the meta-gradient of `params + inner`."""
        del fast
        return tape.gradient(
            self.optimizer.scale_loss(loss),
            params + inner,
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )

    def _step_params(self, params, inner, step):
        """The weights the forward pass of inner step `step` runs with (MAML++: per-step BN)."""
        del inner, step
        return params

    # Whether inner steps compute differently by their index (MAML++'s per-step
    # weights): then each step is traced on its own.
    _inner_steps_differ = False

    def _second_order_gradients(self, grads):
        """Inner gradients kept in the differentiated path (MAML++: order annealing)."""
        return grads

    def _read_values(self):
        """The current variables as tensors: (params, inner, state)."""
        return (
            [tf.convert_to_tensor(v) for v in self.model.trainable_variables],
            [tf.convert_to_tensor(v) for v in self._inner_variables],
            [tf.convert_to_tensor(v) for v in self.model.non_trainable_variables],
        )

    def _adapt_task(self, params, state, x, y, steps, first_order, inner=(), first_step=0):
        """`steps` inner steps on one task's support set; returns (params, state).

        `first_step` numbers the first of them, for step-dependent update rules.
        """
        slots = self._inner_slots([params[i] for i in self._adapted_indices])
        recompute = self.recompute_inner_steps and not first_order and not slots
        traced_steps = {}
        for step in range(first_step, first_step + steps):
            if recompute:
                params, state = self._recomputed_inner_step(params, state, x, y, inner, step)
                continue
            # While tracing, one tf.function per distinct step, traced once and
            # called at every step it serves: tracing time stays flat in the
            # number of steps. Eagerly (`adapt`), steps run op by op: a new
            # tf.function would be traced at every call.
            key = step if self._inner_steps_differ else None
            if key not in traced_steps:
                step_fn = functools.partial(self._inner_step, first_order=first_order, step=step)
                traced_steps[key] = (
                    tf.function(step_fn, autograph=False) if tf.inside_function() else step_fn
                )
            params, state, slots = traced_steps[key](params, state, x, y, inner=inner, slots=slots)
        return params, state

    def _inner_step(self, params, state, x, y, first_order, inner, step, slots):
        """One inner step on the support set `(x, y)`; returns `(params, state, slots)`."""
        adapted = list(self._adapted_indices)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(params)
            y_pred, new_state, extra_losses = self._forward(
                self._step_params(params, inner, step), state, x, training=True
            )
            loss = self._loss(y, y_pred, extra_losses)
        grads = tape.gradient(
            loss, [params[i] for i in adapted],
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
        if first_order:
            grads = [tf.stop_gradient(g) for g in grads]
        else:
            grads = self._second_order_gradients(grads)
        updated, slots = self._inner_update(
            [params[i] for i in adapted], grads, inner, step, slots
        )
        # Moving statistics and RNG seeds move on, outside the differentiated path.
        return self._with_adapted(params, updated), [tf.stop_gradient(s) for s in new_state], slots

    def _recomputed_inner_step(self, params, state, x, y, inner, step):
        """`_inner_step` whose meta-gradient recomputes it (gradient checkpointing).

        Only the step's inputs are kept for the backward pass, not its
        activations. `tf.custom_gradient` rather than `tf.recompute_grad`:
        the latter stops every tape during the forward pass, the inner
        gradient's tape included.
        """
        num_params = len(params)
        adapted = list(self._adapted_indices)
        new_state = []

        @tf.custom_gradient
        def step_fn(*values):
            def run(values):
                out, out_state, _ = self._inner_step(
                    list(values[:num_params]), state, x, y, False,
                    list(values[num_params:]), step, [],
                )
                # Every weight is an input; only the adapted ones are outputs.
                return [out[i] for i in adapted], out_state

            out, out_state = run(values)
            new_state.extend(out_state)

            def grad(*upstream, variables=None):
                # Variables the step reads (e.g. the optimizer's step count) get
                # their gradients too, where they have any.
                variables = list(variables or [])
                floating = [v for v in variables if v.dtype.is_floating]
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    values_again = [tf.identity(v) for v in values]
                    tape.watch(values_again + floating)
                    out_again, _ = run(values_again)
                grads = tape.gradient(
                    out_again, values_again + floating, output_gradients=list(upstream),
                    unconnected_gradients=tf.UnconnectedGradients.ZERO,
                )
                by_variable = dict(zip(map(id, floating), grads[len(values):]))
                return grads[: len(values)], [by_variable.get(id(v)) for v in variables]

            return out, grad

        return self._with_adapted(params, step_fn(*params, *inner)), new_state

    def _predict_query(self, params, state, support_x, query_x, transductive, inner=(), step=0):
        """Query predictions and regularization losses under `params`.

        `step`: the inner step whose per-step weights apply (MAML++).
        """
        params = self._step_params(params, inner, step)
        if transductive:
            y_pred, _, extra_losses = self._forward(params, state, query_x, training=True)
            return y_pred, extra_losses
        state = self._with_support_statistics(params, state, support_x)
        y_pred, _, extra_losses = self._forward(params, state, query_x, training=False)
        return y_pred, extra_losses

    def _with_support_statistics(self, params, state, support_x):
        """`state` with BatchNorm moving statistics set to the support set's under `params`."""
        return support_statistics.with_support_statistics(
            self.model, self._forward, params, state, support_x
        )

    def _add_filled_weight(self, shape, value, name, dtype, trainable=True):
        """A weight of `shape` holding `value` (broadcast) exactly.

        Assigned, not a Constant initializer: Keras casts that through float32.
        """
        weight = self.add_weight(shape=shape, initializer="zeros", name=name, dtype=dtype,
                                 trainable=trainable)
        weight.assign(np.full(weight.shape, value, weight.dtype))
        return weight

    def _with_adapted(self, params, values):
        """`params` with the adapted ones (`_adapted_indices`) replaced by `values`."""
        params = list(params)
        for i, value in zip(self._adapted_indices, values):
            params[i] = value
        return params

    @staticmethod
    def _last_step(steps):
        """Index of the last of `steps` inner steps (0 when none): per-step weights use it."""
        return max(steps - 1, 0)

    def _adapted_values(self, support_x, support_y, steps):
        """Adapted weights and the state that predicts with them on its own.

        Returns `(params, state)` for `stateless_call(..., training=False)`:
        BatchNormalization statistics in `state` are those of the support set
        under the adapted weights.
        """
        params, inner, state = self._read_values()
        params, state = self._adapt_task(params, state, support_x, support_y, steps, True, inner)
        params = self._step_params(params, inner, self._last_step(steps))
        return params, self._with_support_statistics(params, state, support_x)

    def adapt(self, support_x, support_y, steps=None):
        """Adapts to one task; returns a standalone `keras.Model`.

        The returned model has the wrapped model's architecture and the
        adapted weights; BatchNormalization layers hold the support set's
        statistics under the adapted weights as their moving statistics, so
        inference mode predicts each query on its own (see the class
        docstring). It predicts, saves as `.keras` and exports a SavedModel
        (`adapted.export(path)`) like any Keras model.

        Args:
            support_x: `[examples, *features]`, one task without a task axis.
            support_y: `[examples]` class labels or `[examples, *targets]`.
            steps: inner SGD steps; defaults to `eval_inner_steps`.

        Returns:
            A `keras.Model`.
        """
        return adaptation.standalone_model(self, support_x, support_y, steps)

    def export_adaptive(self, filepath, steps=None):
        """Writes a SavedModel that adapts per call, with no Python needed.

        Its `serving_default` signature (also the `adapt_and_predict`
        function) takes `support_x`, `support_y` and `query_x` of one task and
        returns the query predictions after `steps` inner steps (default
        `eval_inner_steps`), exactly as `adapt(support_x, support_y,
        steps).predict(query_x)`.

        Example:

        ```python
        maml.export_adaptive("adaptive/")
        served = tf.saved_model.load("adaptive/")
        predictions = served.adapt_and_predict(support_x, support_y, query_x)
        ```
        """
        adaptation.export_adaptive(self, filepath, steps)

    def _output_spec(self, example_shape, x_dtype):
        """The wrapped model's output spec for a batch of examples (a symbolic call)."""
        return keras_backend.compute_output_spec(
            self.model,
            keras.KerasTensor((None,) + tuple(example_shape), tf.as_dtype(x_dtype).name),
        )

    def _prediction_dtype(self, query_x):
        return tf.as_dtype(self._output_spec(query_x.shape[2:], query_x.dtype).dtype)

    # ------------------------------------------------------------------
    # The meta-batch: tasks in a tf.while_loop, one task's meta-gradient per
    # iteration, accumulated. Tracing sees one task, so the first step comes
    # within seconds, and memory holds one task's second-order graph at a time.

    def _run_tasks(self, support, query, steps, first_order, with_gradients):
        (support_x, support_y), (query_x, query_y) = support, query
        params, inner, state = self._read_values()
        num_tasks = tf.shape(support_x)[0]
        predictions = tf.TensorArray(self._prediction_dtype(query_x), size=num_tasks)
        zero = tf.zeros((), self._loss_dtype)
        grads = [tf.zeros_like(v) for v in params + inner]

        def task_body(t, state, grads, post_sum, pre_sum, predictions):
            sx, sy, qx, qy = support_x[t], support_y[t], query_x[t], query_y[t]
            pre_pred, pre_extra = self._predict_query(
                params, state, sx, qx, self.transductive, inner
            )
            pre_loss = self._loss(qy, pre_pred, pre_extra)
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                if with_gradients and self._meta_gradient_from_tape:
                    tape.watch(params + inner)  # otherwise the tape records nothing
                fast, new_state, y_pred, loss, objective = self._task_objective(
                    params, inner, state, (sx, sy, qx, qy), steps, first_order, with_gradients
                )
            if with_gradients:
                task_grads = self._task_meta_gradients(tape, objective, params, inner, fast)
                grads = [g + tg for g, tg in zip(grads, task_grads)]
            return (
                t + 1,
                new_state,
                grads,
                post_sum + tf.cast(loss, zero.dtype),
                pre_sum + tf.cast(pre_loss, zero.dtype),
                predictions.write(t, y_pred),
            )

        loop_vars = (tf.constant(0), state, grads, zero, zero, predictions)
        if self.task_loop == "unrolled":
            if support_x.shape[0] is None:
                raise ValueError(
                    "task_loop='unrolled' needs a fixed number of tasks per meta-batch "
                    "(batch the episodes with drop_remainder=True), or use task_loop='while'."
                )
            for _ in range(support_x.shape[0]):
                loop_vars = task_body(*loop_vars)
        else:
            loop_vars = tf.while_loop(
                lambda t, *_: t < num_tasks,
                task_body,
                loop_vars,
                parallel_iterations=self._parallel_iterations(support_x, query_x),
            )
        _, state, grads, post_sum, pre_sum, predictions = loop_vars
        count = tf.cast(num_tasks, zero.dtype)
        # Mean over tasks; Keras sums replicas' gradients under tf.distribute.
        scale = loss_module.scale_loss_for_distribution(1.0 / count)
        grads = [g * tf.cast(scale, g.dtype) for g in grads]
        return {
            "gradients": grads,
            "state": state,
            "loss": post_sum / count,
            "pre_adaptation_loss": pre_sum / count,
            "predictions": predictions.stack(),
            "num_tasks": num_tasks,
        }

    def _parallel_iterations(self, support_x, query_x):
        """Tasks the while loop runs at once: `parallel_tasks`, or chosen for the device."""
        if self.parallel_tasks != "auto":
            return self.parallel_tasks
        return auto_parallel_tasks(support_x.shape, query_x.shape)

    @property
    def _loss_dtype(self):
        return tf.float64 if keras.config.floatx() == "float64" else tf.float32

    def _update_metrics(self, query_y, result):
        self._loss_tracker.update_state(result["loss"], sample_weight=result["num_tasks"])
        self.pre_adaptation_loss_tracker.update_state(
            result["pre_adaptation_loss"], sample_weight=result["num_tasks"]
        )
        if self._compile_metrics is not None:
            self._compile_metrics.update_state(
                _merge_task_axis(query_y), _merge_task_axis(result["predictions"])
            )
        logs = self.get_metrics_result()
        if keras_tf_trainer._collective_all_reduce_multi_worker(self.distribute_strategy):
            # Keras reduces logs across workers with a mean over axis 0, which
            # scalars lack (Keras 3.15): give them that axis.
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    @contextlib.contextmanager
    def _meta_learning_ops(self):
        """While tracing a step: exact second derivatives, and BatchNorm fused
        unless XLA compiles the step (XLA fuses it on its own)."""
        xla = bool(self.jit_compile)
        with exact_second_order(xla=xla), fused_kernels(self.fused_batch_norm, xla=xla):
            yield

    def _checked_episode(self, data):
        """`(support, query, empty, bad_labels, detail)`: see `guards.checked_episode`."""
        support, query = episodes_lib.unpack(data)
        (query_x, query_y) = query
        sparse = query_y.dtype.is_integer and query_y.shape.rank == 2
        classes = self._label_classes(query_x.shape[2:], query_x.dtype) if sparse else None
        return guards.checked_episode(support, query, classes)

    def _label_classes(self, example_shape, x_dtype):
        """Classes that integer labels index: the model's `[batch, classes]` output, or None."""
        spec = self._output_spec(example_shape, x_dtype)
        classes = spec.shape[-1] if len(spec.shape) == 2 else None
        return classes if classes and classes > 1 else None

    def _apply_update(self, variables, gradients, state):
        self.optimizer.apply_gradients(zip(gradients, variables))
        for variable, value in zip(self.model.non_trainable_variables, state):
            variable.assign(value)

    def train_step(self, data):
        support, query, empty, bad_labels, detail = self._checked_episode(data)
        with self._meta_learning_ops():
            result = self._run_tasks(
                support, query, self.inner_steps, self.first_order, with_gradients=True
            )
        variables = self.model.trainable_variables + self._inner_variables
        gradients = dict(zip(map(id, variables), result["gradients"]))
        # In Keras' order of trainable_variables, the order in which a loaded
        # model rebuilds the optimizer's slots.
        variables = [v for v in self.trainable_variables if id(v) in gradients]
        gradients = [gradients[id(v)] for v in variables]
        finite = guards.all_finite(gradients + [result["loss"]])
        ok = self._guard.record(
            empty, bad_labels, ~finite, self.optimizer.iterations + 1, detail
        )
        guards.run_if(ok, self._apply_update, variables, gradients, result["state"])
        return self._update_metrics(query[1], result)

    def test_step(self, data):
        # Evaluation leaves the model as it was: moving statistics and RNG
        # seeds are not written back.
        support, query, empty, bad_labels, detail = self._checked_episode(data)
        with self._meta_learning_ops():
            result = self._run_tasks(
                support, query, self.eval_inner_steps, True, with_gradients=False
            )
        finite = tf.reduce_all(tf.math.is_finite(result["loss"]))
        self._guard.record(empty, bad_labels, ~finite, 0, detail)
        return self._update_metrics(query[1], result)

    def predict_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if y is not None:  # full episodes: ((sx, sy), (qx, qy))
            (support_x, support_y), query_x = x, y[0]
        else:  # ((sx, sy), qx)
            (support_x, support_y), query_x = x
        params, inner, state = self._read_values()

        def one_task(task):
            sx, sy, qx = task
            steps = self.eval_inner_steps
            fast, new_state = self._adapt_task(params, state, sx, sy, steps, True, inner)
            y_pred, _ = self._predict_query(
                fast, new_state, sx, qx, self.transductive, inner, self._last_step(steps)
            )
            return y_pred

        return tf.map_fn(
            one_task,
            (support_x, support_y, query_x),
            fn_output_signature=self._prediction_dtype(query_x),
        )


@keras.saving.register_keras_serializable(package="tf_maml")
class FOMAML(MAML):
    """First-order MAML: `MAML(..., first_order=True)`.

    The inner gradients are treated as constants, so the meta-gradient is the
    query-loss gradient at the adapted weights: no second derivatives, less
    memory and time, close to MAML's accuracy in the papers.
    """

    def __init__(self, model, inner_lr=0.4, inner_steps=1, eval_inner_steps=None,
                 transductive=True, **kwargs):
        kwargs.pop("first_order", None)
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps, first_order=True,
                         eval_inner_steps=eval_inner_steps, transductive=transductive, **kwargs)
