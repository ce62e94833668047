"""MAML as a `keras.Model`: `fit` meta-trains, `evaluate` reports few-shot results.

The supervised meta-learner: its arguments, hyper-parameters and config,
building, adaptation and export. The steps Keras runs are in
`tf_maml.learners.steps`, what a member may change (the task objective and its
meta-gradient) in `tf_maml.learners.objective`; a step runs the task loop
(`tf_maml.engine.task_loop`) over tasks that adapt with the inner loop
(`tf_maml.inner_loop`) and its update rule (`tf_maml.rules`).
"""

import contextlib

import keras
import tensorflow as tf

from tf_maml import rules
from tf_maml.learners import serving
from tf_maml.engine import compiled_loss
from tf_maml.learners import entry_checks
from tf_maml.engine import support_statistics
from tf_maml.learners.arguments import checked_int, checked_rule
from tf_maml.engine import task_loop as task_loop_lib
from tf_maml import episodes as episodes_lib
from tf_maml.engine.inner_loop import InnerLoop
from tf_maml.learners.base import MetaLearner, flag, hyperparameter
from tf_maml.learners.objective import MetaObjective
from tf_maml.learners.recorded_episodes import RecordedEpisodes
from tf_maml.learners.steps import MetaSteps
from tf_maml.learners.served_metrics import ServedFigures, ServedMetrics
from tf_maml.keras_patches import (
    compile_loss, compute_output_spec, fused_kernels, unscale_loss_for_distribution,
)


def _checked_task_loop(meta, value):
    if value not in task_loop_lib.TASK_LOOPS:
        raise ValueError(
            f"`task_loop` must be one of {task_loop_lib.TASK_LOOPS}; received {value!r}."
        )
    return value


def _checked_parallel_tasks(meta, value):
    return value if value == "auto" else checked_int(value, "parallel_tasks", 1)


@keras.saving.register_keras_serializable(package="tf_maml")
class MAML(entry_checks.CheckedEntryPoints, RecordedEpisodes, ServedFigures,
           MetaSteps, MetaObjective, MetaLearner):
    """Model-Agnostic Meta-Learning (Finn et al., 2017) for any Keras model.

    Wraps a Keras model (Sequential, functional or subclassed) and meta-trains
    that model's own variables: after `fit`, `model` holds the meta-learned
    initialization. For every task of an episode batch `train_step` takes
    `inner_steps` steps of the inner update rule (`inner_optimizer`; by
    default plain SGD of step size `inner_lr`) on the support set with the
    compiled loss, evaluates the compiled loss on the query set with the
    adapted weights, and applies the compiled optimizer to the gradient of the
    mean over tasks of those query losses (differentiating through the inner
    steps unless `first_order`).

    Logged metrics: `loss`, the query loss after adaptation (the meta-loss);
    `pre_adaptation_loss`, the query loss with the meta-learned initialization;
    and the compiled metrics on the query predictions after serving.
    `evaluate` and `fit(validation_data=...)` adapt with `eval_inner_steps`
    and report the same, without an outer update; a transductive
    meta-learner's also report `served_loss` and `served_<metric>`, each query
    predicted on its own as `adapt` serves it (`tf_maml.learners.served_metrics`).

    Episodes are `((support_x, support_y), (query_x, query_y))` with a leading
    task axis (see `tf_maml.episodes`); for a model with several inputs or
    outputs, `support_x` and `support_y` are dicts keyed by the model's input
    and output names (or lists), and `compile` takes Keras' nested losses,
    `loss_weights` and metrics, which apply per output in the inner and outer
    loop alike. With several outputs, each output's query loss after
    adaptation is logged as Keras names it (`<output>_loss`).

    Normalization: with `transductive=True` (the papers' protocol) every
    forward pass, queries included, runs in training mode: BatchNormalization
    normalizes with the statistics of the batch at hand. With
    `transductive=False`, query predictions run in inference mode with the
    support set's statistics under the adapted weights (BatchNormalization's,
    and `tf_maml.layers.TaskNormalization`'s context moments), so each query
    is predicted on its own; `adapt` and `export_adaptive` always do this,
    and `tf_maml.evaluation` reports both figures.

    Second derivatives are exact for stock Keras layers, BatchNormalization
    and max-pooling under XLA included (see `tf_maml.keras_patches.exact_gradients`).

    Keras habits hold (`tf_maml.MetaLearner`): the hyper-parameters
    below, assigned after `fit` or `evaluate`, apply from the next call as if
    the meta-learner had been made with them (a member raises, naming the
    attribute, where its own construction fixes one); and `compute_loss`,
    overridden, is the task loss of the inner and the outer loop.

    Args:
        model: the `keras.Model` to meta-train.
        inner_lr: step size of the inner SGD steps (default 0.4); give it or
            `inner_optimizer`, not both.
        inner_steps: inner steps per task during meta-training.
        first_order: if True, treat the inner gradients as constants
            (FOMAML): cheaper, no second derivatives.
        eval_inner_steps: inner steps in `evaluate`, `predict` and `adapt`;
            by default (None) those of `inner_steps`, whatever it is set to.
        transductive: normalization statistics of the query batch (True) or
            of the support set (False) for query predictions; by default
            True, unless the model has `TaskNormalization` layers (whose
            point is to predict each query from the support set's moments).
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
            the same to float rounding; see `tf_maml.keras_patches`).
        inner_optimizer: the inner update rule, any `tf_maml.rules` rule:
            `rules.adam(1e-3)`, `rules.chain(rules.clip_by_global_norm(1.0),
            rules.sgd(0.4))`, `rules.masked(rules.meta_sgd(0.4),
            adapted=["head"])`, a rule of your own; default `sgd(inner_lr)`.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:

    ```python
    net = tf_maml.nets.mlp(hidden=(40, 40), outputs=1)
    maml = tf_maml.MAML(net, inner_lr=0.01, inner_steps=1)
    maml.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    episodes = tf_maml.data.sinusoid_episodes(shots=10, meta_batch_size=25)
    maml.fit(episodes, steps_per_epoch=100, epochs=5)
    adapted = maml.adapt(support_x, support_y, steps=10)   # a keras.Model

    clipped = tf_maml.MAML(net, inner_optimizer=tf_maml.rules.chain(
        tf_maml.rules.clip_by_global_norm(1.0), tf_maml.rules.adam(0.01)))
    ```
    """

    def __init__(
        self,
        model,
        inner_lr=None,
        inner_steps=1,
        first_order=False,
        eval_inner_steps=None,
        transductive=None,
        task_loop="auto",
        parallel_tasks="auto",
        recompute_inner_steps=False,
        fused_batch_norm=True,
        inner_optimizer=None,
        **kwargs,
    ):
        super().__init__(model, **kwargs)
        self.inner_loop = None
        self._inner_optimizer, self._inner_lr = checked_rule(inner_optimizer, inner_lr)
        self.inner_steps = inner_steps
        self.eval_inner_steps = eval_inner_steps
        self.task_loop = task_loop
        self.parallel_tasks = parallel_tasks
        self.first_order = first_order
        if transductive is None:
            transductive = not support_statistics.task_norm_layers(model)
        self.transductive = transductive
        self.recompute_inner_steps = recompute_inner_steps
        self.fused_batch_norm = fused_batch_norm
        self.pre_adaptation_loss_tracker = keras.metrics.Mean(name="pre_adaptation_loss")
        # What the episodes look like, learnt from the first data handed over
        # (or a saved build config): example shape, input and label specs.
        self._episode_spec = None
        self._traced_adaptation = serving.TracedAdaptation()
        self._served_metrics = ServedMetrics()

    def _after_init(self):
        # A model built already builds the meta-learner, once the member's own
        # __init__ has set what its build reads (`MetaLearner.__init_subclass__`).
        if self.model.built:
            self._build_inner_loop()

    # ------------------------------------------------------------------
    # Hyper-parameters: each read while a step is traced, so assigning one
    # makes Keras trace anew (`MetaLearner.retrace`).

    inner_steps = hyperparameter(
        "inner_steps", lambda meta, value: checked_int(value, "inner_steps", 1),
        "Inner steps per task in meta-training.")
    first_order = flag("first_order")
    transductive = flag("transductive")
    recompute_inner_steps = flag("recompute_inner_steps")
    fused_batch_norm = flag("fused_batch_norm")
    task_loop = hyperparameter("task_loop", _checked_task_loop, "`task_loop` (see the class).")
    parallel_tasks = hyperparameter("parallel_tasks", _checked_parallel_tasks,
                                    "`parallel_tasks` (see the class).")

    @property
    def eval_inner_steps(self):
        """Inner steps in `evaluate`, `predict`, `adapt` and `export_adaptive`: those
        of `inner_steps` unless set."""
        return self.inner_steps if self._eval_inner_steps is None else self._eval_inner_steps

    @eval_inner_steps.setter
    def eval_inner_steps(self, value):
        self._eval_inner_steps = (None if value is None
                                  else checked_int(value, "eval_inner_steps", 0))
        self.retrace()

    @property
    def inner_optimizer(self):
        """The inner update rule (a `tf_maml.rules` rule)."""
        return self._inner_optimizer

    @inner_optimizer.setter
    def inner_optimizer(self, rule):
        rule = self.inner_rule(checked_rule(rule, None)[0])
        if self.inner_loop is not None:
            inner_loop = self._make_inner_loop(rule)  # builds the rule: its variables exist
            if rule.variables or self._inner_optimizer.variables:
                raise AttributeError(
                    f"`inner_optimizer` can not change from {self._inner_optimizer!r} to "
                    f"{rule!r} once the meta-learner is built: a rule's learned variables are "
                    "weights of the meta-learner. Make a new meta-learner with this rule (the "
                    "model's weights can be copied with set_weights)."
                )
            self.inner_loop = inner_loop
        self._inner_optimizer, self._inner_lr = rule, None
        self.retrace()

    def inner_rule(self, rule):
        """The rule the inner loop runs when `inner_optimizer` is assigned `rule`.

        Part of the member contract (docs/family.md): ANIL masks it, members
        whose rule is their method raise naming `inner_optimizer`.
        """
        return rule

    def retrace(self):
        super().retrace()
        if getattr(self, "inner_loop", None) is not None:
            self.inner_loop.recompute = self.recompute_inner_steps
        # adapt()'s traces read the hyper-parameters too.
        self._traced_adaptation = serving.TracedAdaptation()

    @property
    def inner_lr(self):
        """The inner step size the rule was made from; None if `inner_optimizer` was given."""
        return self._inner_lr

    @inner_lr.setter
    def inner_lr(self, value):
        raise AttributeError(
            f"`inner_lr` is fixed when the meta-learner is made (it makes the inner rule, "
            f"{self.inner_optimizer!r}); assign `inner_optimizer` a rule instead, e.g. "
            f"tf_maml.rules.sgd({value!r}), or make a new meta-learner with inner_lr={value!r}."
        )

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled loss of one task (of its examples of non-zero weight).

        See `tf_maml.MetaLearner.compute_loss`: override it to change
        the task loss of the inner and the outer loop alike.
        """
        del x, training
        total, _ = compiled_loss.losses(compile_loss(self), y, y_pred, sample_weight)
        # Keras scales losses by 1 / replicas under tf.distribute; a task's
        # loss must not depend on how many replicas share the meta-batch.
        return unscale_loss_for_distribution(total)

    # ------------------------------------------------------------------
    # Keras plumbing: build, call, config.

    def build(self, input_shape):
        """Builds the wrapped model for examples of `input_shape` ([batch, ...], nested
        for several inputs)."""
        self._build_for(keras.tree.map_shape_structure(
            lambda shape: tf.TensorSpec(tuple(shape)[1:], self.model.compute_dtype), input_shape
        ))

    def _build_for(self, example_spec):
        """Builds the wrapped model for examples of per-example `example_spec`."""
        if not self.model.built:
            compute_output_spec(self.model, episodes_lib.batched(example_spec), training=False)
        self._build_inner_loop()
        self.built = True

    def _build_inner_loop(self):
        if self.inner_loop is not None:
            return
        self.build_member()
        self.inner_loop = self._make_inner_loop(self.inner_optimizer)
        # Tracked by Keras, so trained and saved as the meta-learner's own weights.
        self.rule_variables = self.inner_optimizer.variables

    def _make_inner_loop(self, rule):
        return InnerLoop(
            self.model, self.task_loss, rule, forward_params=self.step_weights,
            recompute=self.recompute_inner_steps, meta_variables=lambda: self.meta_variables,
        )

    def call(self, inputs, training=None):
        """The wrapped model's predictions with the meta-learned weights."""
        return self.model(inputs, training=training)

    @property
    def output_names(self):
        """The wrapped model's output names (Keras reads them to key nested losses and metrics)."""
        return getattr(self.model, "output_names", None)

    def get_config(self):
        return {
            **super().get_config(),
            "inner_lr": self.inner_lr,
            "inner_steps": self.inner_steps,
            "first_order": self.first_order,
            "eval_inner_steps": self._eval_inner_steps,  # None: follows inner_steps
            "transductive": self.transductive,
            "task_loop": self.task_loop,
            "parallel_tasks": self.parallel_tasks,
            "recompute_inner_steps": self.recompute_inner_steps,
            "fused_batch_norm": self.fused_batch_norm,
            "inner_optimizer": self._rule_config(),
        }

    def _rule_config(self):
        """The `inner_optimizer` argument to save: None when `inner_lr` gave the rule."""
        return None if self.inner_lr is not None else rules.serialize(self.inner_optimizer)

    # ------------------------------------------------------------------
    # fit / evaluate / predict: episodes checked when handed over, faults of
    # a step raised after it (see tf_maml.guards).

    def divergence_hint(self):
        """The likely causes of a non-finite loss, for the error message."""
        rule = (f"inner_lr={self.inner_lr}" if self.inner_lr is not None
                else f"inner_optimizer={self.inner_optimizer!r}")
        return (
            f"Likely cause: inner steps too large for the loss ({rule}, {self.inner_steps} "
            f"inner steps in training, {self.eval_inner_steps} in evaluation), or an outer "
            "learning rate too large. Lower them; learned step sizes (Meta-SGD, MAML++) "
            "learned for few steps can diverge over more: evaluate with eval_inner_steps "
            "equal to inner_steps."
        )

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
            steps: inner steps; defaults to `eval_inner_steps`.

        Returns:
            A `keras.Model`.
        """
        return serving.standalone_model(self, support_x, support_y, steps)

    def export_adaptive(self, filepath, steps=None):
        """Writes a SavedModel that adapts per call, with no Python needed.

        Its `serving_default` signature (also the `adapt_and_predict`
        function) takes `support_x`, `support_y` and `query_x` of one task and
        returns the query predictions after `steps` inner steps (default
        `eval_inner_steps`), exactly as `adapt(support_x, support_y,
        steps).predict(query_x)`. The loaded object records the count:
        `tf.saved_model.load(filepath).inner_steps` (a variable), and a function
        `inner_steps_<count>` that `saved_model_cli show --all` lists.

        Example:

        ```python
        maml.export_adaptive("adaptive/")
        served = tf.saved_model.load("adaptive/")
        predictions = served.adapt_and_predict(support_x, support_y, query_x)
        ```
        """
        serving.export_adaptive(self, filepath, steps)

    @contextlib.contextmanager
    def meta_learning_ops(self):
        """While tracing a step: exact second derivatives, and BatchNorm fused
        unless XLA compiles the step (XLA fuses it on its own)."""
        with super().meta_learning_ops():
            with fused_kernels(self.fused_batch_norm, xla=bool(self.jit_compile)):
                yield
