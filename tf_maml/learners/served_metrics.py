"""The figures as served, logged beside the reported ones by `evaluate` and validation.

A transductive meta-learner reports query metrics with the query batch's
normalization statistics; `adapt()` and `export_adaptive()` serve each query
on its own with the support set's. `evaluate` (and `fit`'s validation) log
both: `loss`, `accuracy`, ... as the meta-learner computes them, and
`served_loss`, `served_accuracy`, ... as served (with several outputs,
`served_<output>_<metric>`). The served metrics are copies of the compiled
ones, made once Keras has built those.
"""

import keras
from absl import logging

from tf_maml.episodes import batched, merge_task_axis
from tf_maml.keras_patches import compile_metrics, copy_compile_metrics, update_compile_metrics

PREFIX = "served_"


class ServedMetrics:
    """`served_loss` and a `served_` copy of the compiled metrics.

    A plain object, not an attribute Keras tracks: the copies are made after
    the meta-learner is built, and are neither saved nor listed in `metrics`.
    """

    def __init__(self):
        self.loss = None
        self.metrics = None  # Keras' compiled metrics, copied
        self._source = None  # the compiled metrics copied: a new compile() makes new copies

    @property
    def ready(self):
        return self.loss is not None

    def create(self, compile_metrics, strategy, targets, outputs):
        """Copies the (built) `compile_metrics` once, eagerly, and builds the copies
        for `targets` and `outputs` (symbolic, nested as the labels and outputs)."""
        if self.ready and self._source is compile_metrics:
            return
        self._source = compile_metrics
        with strategy.scope():
            self.metrics = None
            if compile_metrics is not None:
                self.metrics = copy_compile_metrics(compile_metrics, _copy_metric)
                self.metrics.build(targets, outputs)
            self.loss = keras.metrics.Mean(name=PREFIX + "loss")

    def update(self, y_true, y_pred, loss, num_tasks, sample_weight=None):
        self.loss.update_state(loss, sample_weight=num_tasks)
        if self.metrics is not None:
            update_compile_metrics(self.metrics, y_true, y_pred, sample_weight)

    def results(self):
        if not self.ready:
            return {}
        results = {self.loss.name: self.loss.result()}
        if self.metrics is not None:
            results.update({PREFIX + name: value for name, value in self.metrics.result().items()})
        return results

    def reset(self):
        if self.ready:
            self.loss.reset_state()
        if self.metrics is not None:
            self.metrics.reset_state()


def _copy_metric(metric):
    try:
        return type(metric).from_config(metric.get_config())
    except Exception as error:  # a user metric that cannot be re-made
        logging.warning("No %s%s: the metric cannot be copied from its config (%s).",
                        PREFIX, metric.name, error)
        return None


class ServedFigures:
    """Mixed into `MAML`: test steps of a transductive meta-learner log the served figures."""

    def make_test_function(self, force=False):
        # Called eagerly, after Keras built the compiled metrics, before tracing.
        if self.transductive and self._episode_spec is not None:
            self._served_metrics.create(
                compile_metrics(self), self.distribute_strategy, batched(self.label_spec),
                self.inner_loop.output_spec(self.example_spec),
            )
        return super().make_test_function(force)

    def reset_metrics(self):
        super().reset_metrics()
        self._served_metrics.reset()

    def _served_logs(self, query_y, result, query_weight=None):
        """Adds a test step's served results to the served metrics; their values."""
        if "served_loss" not in result or not self._served_metrics.ready:
            return {}
        self._served_metrics.update(
            merge_task_axis(query_y), merge_task_axis(result["served_predictions"]),
            result["served_loss"], result["num_tasks"],
            None if query_weight is None else merge_task_axis(query_weight),
        )
        return self._served_metrics.results()
