"""MAML for reinforcement learning as a `keras.Model`: `fit` meta-trains a policy.

A meta-iteration (one `train_step`, one compiled program): for every task of
a batch of task parameters, sample trajectories with the policy, take the
inner policy-gradient step(s) with the inner update rule (`tf_maml.rules`),
sample again with the adapted policy; then the outer update of the
post-update trajectories' objective, differentiating through a fresh
adaptation from the same pre-update trajectories: `outer_steps` updates of
the compiled optimizer on PPO's clipped objective (as ProMP, Rothfuss et
al. 2019), or one TRPO step (the MAML paper's; `tf_maml.rl.trpo`).
"""

import keras
import tensorflow as tf

from tf_maml.learners import guards
from tf_maml.learners.arguments import checked_fraction, checked_int, checked_positive, checked_rule
from tf_maml.learners import MetaLearner, flag, hyperparameter
from tf_maml.rl import advantages as advantages_lib
from tf_maml.rl import envs as envs_lib
from tf_maml.rl import (arguments, objectives, outer_objective, policies, rollouts, sampling,
                        serving, trpo)
from tf_maml.keras_patches import is_validation_within_fit
from tf_maml.rl.tasks import checked_task_batch

DEFAULT_INNER_LR = 0.1  # the MAML paper's, for 2D navigation


@keras.saving.register_keras_serializable(package="tf_maml.rl")
class MetaPolicyGradient(MetaLearner):
    """Meta-reinforcement learning of any Keras policy (MAML, Finn et al. 2017, section 5.3).

    `fit` takes batches of tasks from `tf_maml.rl.task_batches(env, ...)`
    (`{"tasks": [T, task_size], "seeds": [T, 2]}`): each batch is one
    meta-iteration. Logged: `pre_adaptation_return` and `return`, the
    average undiscounted return of the trajectories sampled before and after
    adaptation (`inner_steps` steps), and `loss`, the outer objective
    (negated) at the last outer step, before its update (at the first it is
    about 0: advantages are standardized, the probability ratios 1). `evaluate` reports the same with
    `eval_inner_steps` steps and no update; `returns_by_step` gives each
    task's return after 0, 1, ... steps.

    The meta-gradient differentiates through the inner step(s) (unless
    `first_order`) with one of two estimators (`tf_maml.rl.objectives`):
    "lvc", ProMP's low-variance curvature objective (biased, low variance;
    the default), or "unbiased", the policy-gradient surrogate plus the score
    of the pre-update trajectories times the post-update return (an unbiased
    estimate of the gradient of the expected return after adaptation, tested
    against a closed form; one inner step).

    Args:
        policy: a `keras.Model` from observations `[batch, observation_size]`
            to the parameters of the action distribution
            (`tf_maml.rl.distributions`); `tf_maml.rl.policies.mlp(env)`.
        env: a `tf_maml.rl.envs.TaskEnv`.
        inner_lr: step size of the inner policy-gradient step (default 0.1);
            or `inner_optimizer`, any `tf_maml.rules` rule.
        inner_steps: inner steps in meta-training; 0 trains one policy for
            all tasks jointly (the paper's "pretrained" baseline).
        trajectories: trajectories sampled per task before and after adaptation.
        first_order: if True, the inner gradients are constants.
        eval_inner_steps: inner steps in `evaluate`.
        estimator: "lvc" or "unbiased".
        outer_update: "ppo", `outer_steps` steps of the compiled optimizer
            on PPO's clipped objective, or "trpo", one trust-region step
            (`tf_maml.rl.trpo`; the compiled optimizer is not used, and
            `kl`, the step's measured KL, is logged: 0 when the line
            search kept the weights).
        outer_steps: optimizer steps per meta-iteration on the same samples ("ppo").
        clip_ratio: PPO's clipping of the post-update probability ratio ("ppo").
        max_kl: TRPO's bound on the mean KL divergence between the adapted
            policies before and after the step ("trpo").
        cg_steps, cg_damping: TRPO's conjugate gradient iterations and the
            damping added to the Fisher information ("trpo").
        discount, gae_lambda, baseline, normalize_advantages: the advantages
            (`tf_maml.rl.advantages`): discounted returns less the linear
            feature baseline fitted per task, GAE with `gae_lambda < 1`,
            standardized per task.
        parallel_tasks: tasks the task loop runs at once; "auto": 4, or 1 for
            environments stepped outside the graph (`env.pure` False).

    Example:

    ```python
    env = tf_maml.rl.envs.Navigation2D()
    meta = tf_maml.rl.MetaPolicyGradient(tf_maml.rl.policies.mlp(env), env)
    meta.compile(optimizer=keras.optimizers.Adam(1e-3))
    meta.fit(tf_maml.rl.task_batches(env, meta_batch_size=20), steps_per_epoch=50, epochs=10)
    ```
    """

    def __init__(self, policy, env, inner_lr=None, inner_steps=1, trajectories=20,
                 first_order=False, eval_inner_steps=3, estimator="lvc", outer_steps=5,
                 clip_ratio=0.3, discount=0.99, gae_lambda=1.0, baseline="linear",
                 normalize_advantages=True, inner_optimizer=None, parallel_tasks="auto",
                 outer_update="ppo", max_kl=0.01, cg_steps=10, cg_damping=1e-5, **kwargs):
        super().__init__(policy, **kwargs)
        if isinstance(env, dict):
            env = envs_lib.deserialize(env)
        if not isinstance(env, envs_lib.TaskEnv):
            raise TypeError(f"`env` must be a tf_maml.rl.envs.TaskEnv; received {env!r}.")
        self.env = env
        self.distribution = policies.check_policy(policy, env)
        if inner_optimizer is None and inner_lr is None:
            inner_lr = DEFAULT_INNER_LR
        rule, self._inner_lr = checked_rule(inner_optimizer, inner_lr)
        self.inner_loop = arguments.inner_loop(self, rule)
        self.estimator = estimator
        self.inner_steps = inner_steps
        self.eval_inner_steps = eval_inner_steps
        self.trajectories = trajectories
        self.outer_steps = outer_steps
        self.outer_update = outer_update
        self.max_kl = max_kl
        self.cg_steps = cg_steps
        self.cg_damping = cg_damping
        self.parallel_tasks = parallel_tasks
        self.clip_ratio = clip_ratio
        self.discount = discount
        self.gae_lambda = gae_lambda
        self.first_order = first_order
        self.baseline = baseline
        self.normalize_advantages = normalize_advantages
        self._trackers = [keras.metrics.Mean(name=n)
                          for n in ("loss", "return", "pre_adaptation_return", "kl", "success")]
        self.built = True  # the policy is built; nothing depends on data

    # Hyper-parameters: read while a step is traced; assigning one retraces.
    inner_steps = hyperparameter("inner_steps", arguments.checked_inner_steps,
                                 "Inner steps in meta-training (0: joint pretraining).")
    eval_inner_steps = arguments.number("eval_inner_steps", lambda v, n: checked_int(v, n, 0))
    trajectories = arguments.number("trajectories", lambda v, n: checked_int(v, n, 1))
    outer_steps = arguments.number("outer_steps", lambda v, n: checked_int(v, n, 1))
    clip_ratio = arguments.number("clip_ratio", checked_fraction)
    outer_update = hyperparameter("outer_update", arguments.checked_outer_update,
                                  "`outer_update` (see the class).")
    max_kl = arguments.number("max_kl", checked_positive)
    cg_steps = arguments.number("cg_steps", lambda v, n: checked_int(v, n, 1))
    cg_damping = arguments.number("cg_damping", checked_positive)
    discount = arguments.number("discount", checked_fraction)
    gae_lambda = arguments.number(
        "gae_lambda", lambda v, n: checked_fraction(v, n, zero_allowed=True))
    first_order = flag("first_order")
    normalize_advantages = flag("normalize_advantages")
    estimator = hyperparameter("estimator", arguments.checked_estimator,
                               "`estimator` (see the class).")
    baseline = hyperparameter("baseline", arguments.checked_baseline,
                              "`baseline` (see the class).")
    parallel_tasks = hyperparameter("parallel_tasks", arguments.checked_parallel_tasks,
                                    "`parallel_tasks` (see the class).")

    @property
    def policy(self):
        """The meta-learned policy (`model`)."""
        return self.model

    @property
    def inner_optimizer(self):
        """The inner update rule (a `tf_maml.rules` rule without learned variables)."""
        return self.inner_loop.rule

    @inner_optimizer.setter
    def inner_optimizer(self, rule):
        self.inner_loop = arguments.inner_loop(self, checked_rule(rule, None)[0])
        self._inner_lr = None
        self.retrace()

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The inner step's loss: the negated inner objective of a task's trajectories.

        `x`: observations `[K * H, observation_size]`; `y`: a dict of their
        `actions`, `log_probs` (under the pre-update policy), `advantages` and
        `mask`; `y_pred`: the policy's distribution parameters. Override it
        to change what the inner policy-gradient step descends.
        """
        del x, sample_weight, training
        log_probs = self.distribution.log_prob(y_pred, y["actions"])
        return -objectives.inner_objective(log_probs, y["log_probs"], y["advantages"],
                                           y["mask"], self.estimator)

    # ------------------------------------------------------------------
    # Keras.

    def call(self, observations, training=False):
        """The policy's distribution parameters for `observations` (no adaptation)."""
        return self.policy(observations, training=training)

    @property
    def metrics(self):
        return list(self._trackers)

    def _update_trackers(self, values):
        """Updates the trackers named in `values`; returns their results (the step's logs)."""
        updated = [t for t in self._trackers if t.name in values]
        for tracker in updated:
            tracker.update_state(values[tracker.name])
        return {t.name: t.result() for t in updated}

    def fit(self, x=None, *args, **kwargs):
        checked_task_batch(self.env, x)
        if self.outer_update == "trpo" and self.distribute_strategy.num_replicas_in_sync > 1:
            raise ValueError("outer_update='trpo' runs on one replica: its line search and "
                             "step are not all-reduced. Use outer_update='ppo' with a "
                             "distribution strategy.")
        self._check_jit_compile()
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        if not is_validation_within_fit(kwargs):
            checked_task_batch(self.env, x)
        self._check_jit_compile()
        return super().evaluate(x, *args, **kwargs)

    def _check_jit_compile(self):
        """Environments stepped in Python (tf.numpy_function) run without XLA."""
        if self.env.pure or not self.jit_compile:
            return
        if self.get_compile_config().get("jit_compile") is True:
            raise ValueError(
                f"{type(self.env).__name__} steps its environments in Python "
                "(tf.numpy_function), which XLA can not compile: compile with "
                "jit_compile=False.")
        self.jit_compile = False  # "auto" chose XLA

    def divergence_hint(self):
        return ("Lower the outer learning rate, `inner_lr` or `clip_ratio`; a policy's log "
                "standard deviation that runs off makes log-probabilities overflow.")

    def train_step(self, data):
        data = keras.utils.unpack_x_y_sample_weight(data)[0]  # train_on_batch packs (x, y, w)
        params, state = self.inner_loop.current_values()
        sampled = sampling.sample_adapting(self, params, state, data["tasks"], data["seeds"],
                                           self.inner_steps, True)
        # The meta-iteration (1 first), as fault messages count meta-steps.
        iteration = self.optimizer.iterations // self._optimizer_steps_per_iteration() + 1
        environment_fault = self._environment_fault(sampled)
        logs = sampling.measured_logs(sampled)
        if self.outer_update == "trpo":
            step, logs["loss"], logs["kl"], grads = trpo.trust_region_step(self, sampled)
            finite = guards.all_finite(grads + step + [logs["loss"]])
            ok = self._guard.record(iteration, environment_fault, guards.nonfinite_fault(finite))
            guards.run_if(ok, trpo.apply_step, self, step)
            return self._update_trackers(logs)
        for _ in range(self.outer_steps):
            grads, logs["loss"] = self.outer_gradients(sampled)
            finite = guards.all_finite(grads + [logs["loss"]])
            ok = self._guard.record(iteration, environment_fault, guards.nonfinite_fault(finite))
            guards.run_if(ok, self.optimizer.apply, grads, self.policy.trainable_variables)
        return self._update_trackers(logs)

    def _optimizer_steps_per_iteration(self):
        return self.outer_steps if self.outer_update == "ppo" else 1

    @property
    def meta_iterations(self):
        """Meta-iterations applied so far (counted by the compiled optimizer's `iterations`)."""
        return int(self.optimizer.iterations.numpy()) // self._optimizer_steps_per_iteration()

    def test_step(self, data):
        data = keras.utils.unpack_x_y_sample_weight(data)[0]
        params, state = self.inner_loop.current_values()
        sampled = sampling.sample_adapting(self, params, state, data["tasks"], data["seeds"],
                                           self.eval_inner_steps, False)
        self._guard.record(0, self._environment_fault(sampled),
                           guards.nonfinite_fault(guards.all_finite([sampled["returns"]])))
        # No loss: evaluation updates nothing.
        return self._update_trackers(sampling.measured_logs(sampled))

    def _environment_fault(self, sampled):
        """A `StepGuard` fault: in some task's trajectories (any inner step), the
        environment returned a NaN or infinite observation or reward for finite actions
        (non-finite actions are the policy's fault); see `rollouts.environment_fault_code`."""
        code = tf.cast(tf.reduce_max(sampled["environment_fault"]), tf.int32)
        self._guard.name_inputs(rollouts.ENVIRONMENT_OUTPUTS)
        return guards.INPUT, code > 0, tf.stack([tf.maximum(code - 1, 0), 0, 0])

    def outer_gradients(self, sampled):
        """`(grads, loss)`: the meta-gradient of the outer loss at the current weights, mean
        over the tasks of `sampled` (`sampling.sample_adapting`'s, with trajectories)."""
        return outer_objective.meta_gradient(self, sampled)

    # ------------------------------------------------------------------
    # Sampling and adaptation.

    def _rollout(self, params, state, task, seed):
        """A task's trajectories under `params`, with advantages: a dict of `[K, H, ...]`."""
        def policy_fn(observations):
            return self.inner_loop.forward(params, state, observations, training=False)[0]

        sampled = rollouts.sample(policy_fn, self.distribution, self.env, task[None],
                                  seed[None], self.trajectories)
        trajectories = self.with_advantages({name: value[0] for name, value in sampled.items()})
        trajectories["return"] = tf.reduce_mean(rollouts.returns(trajectories))
        if "success" in trajectories:
            trajectories["success"] = tf.reduce_mean(trajectories["success"])
        return trajectories

    def with_advantages(self, trajectories):
        """A task's trajectories `[K, H, ...]` with their `advantages` and the `scale` they
        were divided by (1 unless `normalize_advantages`), as the inner step reads them."""
        raw = advantages_lib.advantages(trajectories, self.discount, self.gae_lambda,
                                        self.baseline)
        if not self.normalize_advantages:
            return {**trajectories, "advantages": raw, "scale": tf.ones([])}
        values, scale = advantages_lib.standardized(raw, trajectories["mask"])
        return {**trajectories, "advantages": values, "scale": tf.reshape(scale, [])}

    def _flat(self, trajectories):
        """`(observations, y)`: a task's trajectories as `[K * H, ...]` examples for the inner loop."""
        def flat(value):
            return tf.reshape(value, tf.concat([[-1], tf.shape(value)[2:]], 0))

        y = {k: flat(trajectories[k]) for k in ("actions", "log_probs", "advantages", "mask")}
        return flat(trajectories["observations"]), y

    def _adapt(self, params, state, trajectories, first_order, rule_state=None, step=0):
        """Inner step number `step` from a task's trajectories: `(params, state, rule_state)`.

        `rule_state`: the update rule's state after the steps before (None at
        the first), so that a stateful rule (Adam's moments) carries on.
        """
        x, y = self._flat(trajectories)
        return self.inner_loop.adapt(params, state, x, y, 1, first_order, rule_state,
                                     first_step=step)

    def post_update_prediction(self, params, state, before, post):
        """`(y_pred, y, state)`: the policy adapted from `params` on a task's pre-update
        trajectories `before` (one per inner step), on its post-update trajectories `post`
        flattened to examples `y` (`_flat`)."""
        fast, rule_state = params, None
        for step, trajectories in enumerate(before):
            fast, state, rule_state = self._adapt(fast, state, trajectories, self.first_order,
                                                  rule_state, step)
        observations, y = self._flat(post)
        y_pred = self.inner_loop.forward(fast, state, observations, training=False)[0]
        return y_pred, y, state

    def meta_gradients(self, data):
        """The meta-gradient of the outer loss (the negated objective: descend it) for one
        batch of tasks at the current weights, mean over tasks, aligned with
        `policy.trainable_variables`: the first outer step's, not applied."""
        with self.meta_learning_ops():
            params, state = self.inner_loop.current_values()
            sampled = sampling.sample_adapting(self, params, state, data["tasks"],
                                               data["seeds"], self.inner_steps, True)
            return self.outer_gradients(sampled)[0]

    def returns_by_step(self, data, steps=None):
        """`[T, steps + 1]`: each task's average return after 0..steps inner steps
        (default `eval_inner_steps`), sampling afresh after each step."""
        return self.sample_by_step(data, steps, keep=False)["returns"]

    def sample_by_step(self, data, steps=None, keep=True):
        """Each task's trajectories and average return after 0..steps inner steps.

        Returns a dict: `returns` `[T, steps + 1]`, `success` alike where the
        environment `reports_success` (the fraction of trajectories that
        succeeded), and, if `keep`, `trajectories`, a list (one per step) of
        dicts of `[T, K, H, ...]` tensors (`tf_maml.rl.rollouts.FIELDS` and
        the advantages).
        """
        steps = self.eval_inner_steps if steps is None else checked_int(steps, "steps", 0)
        checked_task_batch(self.env, data)
        @tf.function(autograph=False)  # one graph: eagerly, every rollout step is Python
        def sample(tasks, seeds):
            params, state = self.inner_loop.current_values()
            result = sampling.sample_adapting(self, params, state, tasks, seeds, steps, keep)
            return {k: result[k] for k in ("returns", "success", "trajectories") if k in result}

        return sample(data["tasks"], data["seeds"])

    def adapt(self, observations, actions, rewards, mask=None, steps=1):
        """The policy adapted to one task's trajectories: a new `keras.Model`.

        Args:
            observations: `[trajectories, steps, observation_size]`, sampled
                with this meta-learner's policy (its pre-update policy).
            actions: `[trajectories, steps, ...]`, the actions taken.
            rewards: `[trajectories, steps]`.
            mask: `[trajectories, steps]`, 1 for steps up to an episode's end
                and 0 after; default all 1.
            steps: inner steps on these trajectories (1, as meta-trained).

        A pure function of the weights and the trajectories: safe from many threads.
        """
        return serving.adapted_policy(self, observations, actions, rewards, mask, steps)

    def export_adaptive(self, filepath, steps=1):
        """Writes a SavedModel that adapts to a new task's trajectories and acts.

        Its endpoint `adapt_and_act(observations, actions, rewards, mask,
        query_observations)` (shapes as `adapt`; `query_observations`
        `[N, observation_size]`) returns the adapted policy's action
        distribution parameters for the query observations `[N, P]` (for a
        Gaussian, the mean and log standard deviation concatenated; for
        discrete actions, the logits). Load it with `tf.saved_model.load`.
        """
        serving.export_adaptive(self, filepath, steps)

    model_argument = "policy"

    def get_config(self):
        return {
            **super().get_config(),
            "env": envs_lib.serialize(self.env),
            "inner_lr": self._inner_lr,
            "inner_optimizer": (None if self._inner_lr is not None
                                else keras.saving.serialize_keras_object(self.inner_optimizer)),
            "inner_steps": self.inner_steps, "trajectories": self.trajectories,
            "first_order": self.first_order, "eval_inner_steps": self.eval_inner_steps,
            "estimator": self.estimator, "outer_steps": self.outer_steps,
            "clip_ratio": self.clip_ratio, "discount": self.discount,
            "gae_lambda": self.gae_lambda, "baseline": self.baseline,
            "normalize_advantages": self.normalize_advantages,
            "parallel_tasks": self.parallel_tasks, "outer_update": self.outer_update,
            "max_kl": self.max_kl, "cg_steps": self.cg_steps, "cg_damping": self.cg_damping,
        }
