"""CAVIA (Zintgraf et al., 2019): only task context parameters adapt in the inner loop."""

import keras
import tensorflow as tf

from tf_maml import rules
from tf_maml.learners.family.masked import MaskedMember
from tf_maml.task_context import TaskContext


class _Contexts:
    """CAVIA's `adapted` predicate: the `TaskContext` layers."""

    def __call__(self, layer):
        return isinstance(layer, TaskContext)

    def __repr__(self):
        return "the TaskContext layers"


@keras.saving.register_keras_serializable(package="tf_maml")
class CAVIA(MaskedMember):
    """Fast Context Adaptation via Meta-Learning: only `tf_maml.layers.TaskContext`
    parameters adapt, from 0 in every task; the rest of the network is meta-trained.

    The context is never meta-trained (its meta-gradient is dropped, so its
    variable stays 0 and every task starts from it): a task is told apart by
    a few numbers, which adapt fast and overfit little, and the network
    learns to read them.

    Args:
        model: a `keras.Model` with at least one `tf_maml.layers.TaskContext`.
        inner_lr, inner_optimizer: the context's rule (default `sgd(inner_lr)`;
            the paper takes large steps, e.g. 1.0 for regression).
        **kwargs: as `MAML`.
    """

    def __init__(self, model, inner_lr=None, inner_optimizer=None, **kwargs):
        super().__init__(model, _Contexts(), inner_lr, inner_optimizer, **kwargs)

    def build_member(self):
        weights = rules.model_weights(self.model)
        self._contexts = [i for i, w in enumerate(weights) if isinstance(w.layer, TaskContext)]
        if not self._contexts:
            raise ValueError(
                "CAVIA adapts only tf_maml.layers.TaskContext layers, and the model has none: "
                "add one where the task should enter, e.g. after the input.")

    def task_meta_gradients(self, tape, objective, params, meta_values, fast):
        grads = super().task_meta_gradients(tape, objective, params, meta_values, fast)
        # The context starts at 0 in every task: it is never meta-trained.
        return [tf.zeros_like(g) if i in self._contexts else g for i, g in enumerate(grads)]
