"""The figures as served, logged beside the reported ones by `evaluate` and validation.

A transductive meta-learner reports query metrics with the query batch's
normalization statistics; `adapt()` and `export_adaptive()` serve each query
on its own with the support set's. `evaluate` (and `fit`'s validation) log
both: `loss`, `accuracy`, ... as the meta-learner computes them, and
`served_loss`, `served_accuracy`, ... as served. The served metrics are
copies of the compiled ones, made once Keras has built those.
"""

import keras
from absl import logging

from tf_maml.episodes import merge_task_axis

PREFIX = "served_"


class ServedMetrics:
    """`served_loss` and a `served_` copy of each compiled metric.

    A plain object, not an attribute Keras tracks: the copies are made after
    the meta-learner is built, and are neither saved nor listed in `metrics`.
    """

    def __init__(self):
        self.loss = None
        self.metrics = []
        self._source = None  # the compiled metrics copied: a new compile() makes new copies

    @property
    def ready(self):
        return self.loss is not None

    def create(self, compile_metrics, strategy):
        """Makes the copies of the (built) `compile_metrics` once, eagerly."""
        if self.ready and self._source is compile_metrics:
            return
        self._source = compile_metrics
        with strategy.scope():
            copies = []
            for metric in compile_metrics.metrics if compile_metrics is not None else []:
                try:
                    copies.append(type(metric).from_config(
                        {**metric.get_config(), "name": PREFIX + metric.name}
                    ))
                except Exception as error:  # a user metric that cannot be re-made
                    logging.warning("No %s%s: the metric cannot be copied from its config (%s).",
                                    PREFIX, metric.name, error)
            self.metrics = copies
            self.loss = keras.metrics.Mean(name=PREFIX + "loss")

    def update(self, y_true, y_pred, loss, num_tasks):
        self.loss.update_state(loss, sample_weight=num_tasks)
        for metric in self.metrics:
            metric.update_state(y_true, y_pred)

    def results(self):
        if not self.ready:
            return {}
        return {m.name: m.result() for m in [self.loss] + self.metrics}

    def reset(self):
        for metric in ([self.loss] if self.ready else []) + self.metrics:
            metric.reset_state()


class ServedFigures:
    """Mixed into `MAML`: test steps of a transductive meta-learner log the served figures."""

    def make_test_function(self, force=False):
        # Called eagerly, after Keras built the compiled metrics, before tracing.
        if self.transductive:
            self._served_metrics.create(self._compile_metrics, self.distribute_strategy)
        return super().make_test_function(force)

    def reset_metrics(self):
        super().reset_metrics()
        self._served_metrics.reset()

    def _served_logs(self, query_y, result):
        """Adds a test step's served results to the served metrics; their values."""
        if "served_loss" not in result or not self._served_metrics.ready:
            return {}
        self._served_metrics.update(
            merge_task_axis(query_y), merge_task_axis(result["served_predictions"]),
            result["served_loss"], result["num_tasks"],
        )
        return self._served_metrics.results()
