"""iMAML (Rajeswaran et al., 2019): the implicit meta-gradient of a proximal inner loop."""

import keras
import tensorflow as tf

from tf_maml import episodes
from tf_maml import rules
from tf_maml.engine.conjugate_gradient import conjugate_gradient, dot
from tf_maml.engine.inner_loop import last_step
from tf_maml.learners import fixed, hyperparameter
from tf_maml.learners.arguments import checked_int, checked_positive, checked_rule, refuse
from tf_maml.learners.maml import MAML
from tf_maml.learners.objective import TaskObjective


@keras.saving.register_keras_serializable(package="tf_maml")
class IMAML(MAML):
    """Implicit MAML: the meta-gradient of a proximal inner loop, by the implicit function theorem.

    The inner loop descends the support loss plus `proximal_weight / 2 *
    ||phi - theta||^2` from `theta` (the rule `rules.chain(rules.proximal(
    proximal_weight), rule)`). At its minimum `phi*`, the meta-gradient of the
    query loss is `(I + H / proximal_weight)^-1 g`, `g` the query loss'
    gradient and `H` the support loss' Hessian at `phi*`; `cg_steps` of
    conjugate gradient solve it with Hessian-vector products. Nothing is
    differentiated through the inner steps: memory does not grow with
    `inner_steps`, which can be many. The meta-gradient is exact at a minimum
    of the inner problem; take enough inner steps to reach it.

    Weights a masked rule keeps fixed get theirs exactly too: their query
    gradient less `H_na v / proximal_weight`, `v` the solution above.

    Args:
        model: the `keras.Model` to meta-train.
        inner_lr: step size of the inner SGD steps; give it or `inner_optimizer`.
        inner_steps: inner steps per task (the paper takes 16 to 25 on Omniglot).
        proximal_weight: lambda, the weight of the proximal term: larger keeps
            the adapted weights nearer the initialization (the paper: 0.5 to 2).
        cg_steps: conjugate gradient iterations per task (the paper: 5).
        inner_optimizer: any `tf_maml.rules` rule without learned variables
            (their meta-gradient would not be defined: the implicit gradient does
            not depend on the path the inner loop takes).
        **kwargs: as `MAML` (`eval_inner_steps`, `transductive`, `task_loop`, `name`).

    Example:

    ```python
    imaml = tf_maml.IMAML(tf_maml.nets.conv4(20), inner_lr=0.1, inner_steps=16,
                          proximal_weight=2.0, cg_steps=5)
    ```
    """

    first_order = hyperparameter(
        "first_order", fixed("first_order", "iMAML never differentiates through the inner loop"),
        "True: the inner steps are never differentiated; the meta-gradient is implicit.")
    recompute_inner_steps = hyperparameter(
        "recompute_inner_steps",
        fixed("recompute_inner_steps", "iMAML keeps no inner step for its meta-gradient"),
        "False: nothing to recompute.")
    cg_steps = hyperparameter(
        "cg_steps", lambda meta, value: checked_int(value, "cg_steps", 1),
        "Conjugate gradient iterations per task.")

    def __init__(self, model, inner_lr=None, inner_steps=10, proximal_weight=2.0, cg_steps=5,
                 inner_optimizer=None, **kwargs):
        refuse(kwargs, "IMAML",
               first_order="its meta-gradient never differentiates through the inner steps",
               recompute_inner_steps="it keeps no inner step for its meta-gradient")
        rule, inner_lr = checked_rule(inner_optimizer, inner_lr)
        weight = checked_positive(proximal_weight, "proximal_weight")
        super().__init__(model, inner_steps=inner_steps, first_order=True,
                         inner_optimizer=rules.chain(rules.proximal(weight), rule), **kwargs)
        self._inner_lr = inner_lr
        self._proximal_weight = weight
        self.cg_steps = cg_steps

    @property
    def proximal_weight(self):
        """lambda, the weight of the proximal term of the inner loss."""
        return self._proximal_weight

    @proximal_weight.setter
    def proximal_weight(self, value):
        self._proximal_weight = checked_positive(value, "proximal_weight")
        self.inner_optimizer.rules[0].weight = self._proximal_weight
        self.retrace()

    def inner_rule(self, rule):
        return rules.chain(rules.proximal(self.proximal_weight), rule)

    def _rule_config(self):
        if self.inner_lr is not None:
            return None
        return rules.serialize(self.inner_optimizer.rules[1])  # the proximal term is ours

    def get_config(self):
        config = super().get_config()
        for name in ("first_order", "recompute_inner_steps"):
            config.pop(name)
        return {**config, "proximal_weight": self.proximal_weight, "cg_steps": self.cg_steps}

    # ------------------------------------------------------------------
    # The meta-objective: adaptation untaped, then the implicit gradient.

    def task_objective(self, task, params, state, steps, first_order, training):
        support_x, support_y, query_x, query_y, support_weight, query_weight = (
            episodes.task_parts(task))
        # From theta as constants: the meta-learner's tape records no inner step.
        theta = [tf.stop_gradient(p) for p in params]
        fast, state, _ = self.inner_loop.adapt(theta, state, support_x, support_y, steps, True,
                                               weights=support_weight)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(fast)
            y_pred, extra = self.inner_loop.predict(
                fast, state, support_x, query_x, self.transductive, last_step(steps),
                support_weight, query_weight)
            loss = self.task_loss(query_x, query_y, y_pred, extra, query_weight, training)
        if not training:
            return TaskObjective(fast, state, y_pred, loss, loss)
        self._check_rule_has_no_variables()
        # Scaled as the compiled optimizer asks (mixed precision): the solve is linear in it.
        query_grads = [tf.convert_to_tensor(g) for g in tape.gradient(
            self.optimizer.scale_loss(loss), fast,
            unconnected_gradients=tf.UnconnectedGradients.ZERO)]
        implicit = self.implicit_gradient(fast, state, support_x, support_y, support_weight,
                                          query_grads)
        # Its gradient with respect to theta is the implicit meta-gradient.
        surrogate = dot([tf.stop_gradient(g) for g in implicit], params)
        return TaskObjective(fast, state, y_pred, loss, surrogate)

    def task_meta_gradients(self, tape, objective, params, meta_values, fast):
        del fast  # the surrogate is scaled already: no second scale_loss
        return tape.gradient(objective, params + meta_values,
                             unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def implicit_gradient(self, fast, state, support_x, support_y, support_weight, query_grads):
        """The meta-gradient, aligned with the model's weights, from the query loss'
        gradient `query_grads` at the adapted weights `fast`."""
        adapted = self.inner_loop.adapted
        hvp = self._hessian_vector_product(state, support_x, support_y, support_weight)
        weight = self.proximal_weight

        def apply(vector):  # (I + H_aa / lambda) vector
            product = hvp(fast, vector)
            return [v + product[i] / weight for v, i in zip(vector, adapted)]

        solution = conjugate_gradient(apply, [query_grads[i] for i in adapted], self.cg_steps)
        grads = list(query_grads)
        if len(adapted) < len(fast):  # weights the rule keeps fixed: g_n - H_na v / lambda
            product = hvp(fast, solution)
            grads = [g - product[i] / weight for i, g in enumerate(grads)]
        for i, value in zip(adapted, solution):
            grads[i] = value
        return grads

    def _hessian_vector_product(self, state, support_x, support_y, support_weight):
        """`(fast, vector) -> H @ vector` for every weight, `vector` over the adapted ones;
        H the support loss' Hessian (the proximal term's is the identity, added apart)."""
        loop = self.inner_loop

        def product(fast, vector):
            with tf.GradientTape(watch_accessed_variables=False) as outer:
                outer.watch(fast)
                with tf.GradientTape(watch_accessed_variables=False) as inner:
                    inner.watch(fast)
                    y_pred, _, extra = loop.forward(fast, state, support_x, True, support_weight)
                    loss = self.task_loss(support_x, support_y, y_pred, extra, support_weight)
                grads = inner.gradient(loss, [fast[i] for i in loop.adapted],
                                       unconnected_gradients=tf.UnconnectedGradients.ZERO)
                projection = dot([tf.convert_to_tensor(g) for g in grads], vector)
            return [tf.convert_to_tensor(g) for g in outer.gradient(
                projection, fast, unconnected_gradients=tf.UnconnectedGradients.ZERO)]

        # Traced once, called at every iteration: tracing stays flat in cg_steps.
        return tf.function(product, autograph=False) if tf.inside_function() else product

    def _check_rule_has_no_variables(self):
        if self.inner_optimizer.variables:
            raise ValueError(
                f"IMAML's rule {self.inner_optimizer.rules[1]!r} has learned variables; the "
                "implicit meta-gradient does not depend on the path the inner loop takes, so "
                "they would never be meta-trained. Use a rule without them (sgd, momentum, "
                "adam, clipping chains), or MetaSGD / MAMLPlusPlus to learn step sizes.")
