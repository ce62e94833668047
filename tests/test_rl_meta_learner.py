"""tf_maml.rl.MetaPolicyGradient: fit, evaluate, save and load, inner step, faults, bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml
from tf_maml.rl import envs, sampling

ENV = envs.Navigation2D(horizon=10)


def _meta(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    policy = tf_maml.rl.policies.mlp(ENV, hidden=(8,))
    kwargs = {"trajectories": 3, "outer_steps": 2, **kwargs}
    meta = tf_maml.rl.MetaPolicyGradient(policy, ENV, **kwargs)
    meta.compile(optimizer=keras.optimizers.Adam(1e-2))
    return meta


def _batches(count=2, seed=0, size=3):
    return tf_maml.rl.task_batches(ENV, size, seed=seed, num_batches=count)


def _weights(model):
    return [v.numpy() for v in model.policy.weights]


def test_fit_logs_returns_and_is_reproducible():
    first = _meta()
    history = first.fit(_batches(), epochs=1, verbose=0).history
    assert set(history) == {"loss", "return", "pre_adaptation_return"}
    assert all(np.isfinite(v).all() for v in history.values())
    second = _meta()
    second.fit(_batches(), epochs=1, verbose=0)
    for a, b in zip(_weights(first), _weights(second)):
        np.testing.assert_array_equal(a, b)
    assert first.optimizer.iterations.numpy() == 2 * 2  # batches x outer steps
    logs = first.evaluate(_batches(1, seed=9), return_dict=True, verbose=0)
    assert set(logs) >= {"return", "pre_adaptation_return"}


def test_returns_by_step_and_pretraining_without_inner_steps():
    meta = _meta(eval_inner_steps=2)
    batch = next(iter(_batches(1)))
    returns = meta.returns_by_step(batch)
    assert returns.shape == (3, 3)
    np.testing.assert_array_equal(returns, meta.returns_by_step(batch))  # a function of the seeds
    joint = _meta(inner_steps=0)
    history = joint.fit(_batches(), epochs=1, verbose=0).history
    assert history["return"] == history["pre_adaptation_return"]


def test_inner_step_is_the_policy_gradient_step():
    meta = _meta(inner_lr=0.3, normalize_advantages=False)
    batch = next(iter(_batches(1)))
    params, state = meta.inner_loop.current_values()
    trajectories = meta._rollout(params, state, batch["tasks"][0], batch["seeds"][0])
    adapted, _, _ = meta._adapt(params, state, trajectories, first_order=True)
    variables = meta.policy.trainable_variables
    with tf.GradientTape() as tape:
        observations = tf.reshape(trajectories["observations"], [-1, 2])
        log_probs = meta.distribution.log_prob(
            meta.policy(observations), tf.reshape(trajectories["actions"], [-1, 2]))
        mask = tf.reshape(trajectories["mask"], [-1])
        objective = tf.reduce_sum(log_probs * tf.reshape(trajectories["advantages"], [-1])
                                  * mask) / tf.reduce_sum(mask)
    gradients = tape.gradient(objective, variables)
    for value, variable, gradient in zip(adapted, variables, gradients):
        np.testing.assert_allclose(value, variable + 0.3 * gradient, rtol=1e-5, atol=1e-6)


def test_first_order_meta_gradients_agree_across_estimators_and_differ_from_second_order():
    batch = next(iter(_batches(1)))
    gradients = {}
    for estimator in ("lvc", "unbiased"):
        for first_order in (True, False):
            meta = _meta(estimator=estimator, first_order=first_order, inner_lr=0.5)
            gradients[estimator, first_order] = meta.meta_gradients(batch)
    for a, b in zip(gradients["lvc", True], gradients["unbiased", True]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for key in (("lvc", False), ("unbiased", False)):
        difference = sum(float(tf.reduce_sum(tf.abs(a - b)))
                         for a, b in zip(gradients[key], gradients["lvc", True]))
        assert difference > 1e-3, key


def test_save_and_load_keep_the_policy_and_settings(tmp_path):
    meta = _meta(estimator="unbiased", inner_lr=0.2, eval_inner_steps=1)
    meta.fit(_batches(1), epochs=1, verbose=0)
    path = str(tmp_path / "meta.keras")
    meta.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, tf_maml.rl.MetaPolicyGradient)
    assert isinstance(loaded.env, envs.Navigation2D) and loaded.env.horizon == 10
    assert (loaded.estimator, loaded.eval_inner_steps, loaded.trajectories) == ("unbiased", 1, 3)
    batch = next(iter(_batches(1, seed=5)))
    np.testing.assert_array_equal(loaded.returns_by_step(batch), meta.returns_by_step(batch))


def test_compiled_with_xla():
    meta = _meta()
    meta.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
    history = meta.fit(_batches(1), epochs=1, verbose=0).history
    assert np.isfinite(history["return"]).all()


class _NaNRewards(envs.Navigation2D):
    def step(self, tasks, state, action):
        state, observation, reward, done = super().step(tasks, state, action)
        return state, observation, reward * np.nan, done


def test_non_finite_meta_gradient_stops_training_and_keeps_weights():
    keras.utils.set_random_seed(0)
    env = _NaNRewards(horizon=5)
    meta = tf_maml.rl.MetaPolicyGradient(tf_maml.rl.policies.mlp(env, hidden=(4,)), env,
                                         trajectories=2, outer_steps=1)
    meta.compile(optimizer="adam")
    before = [v.numpy() for v in meta.policy.weights]
    # The environment is named as the cause, not the step sizes (issue 26).
    with pytest.raises(tf_maml.guards.EpisodeError, match="meta-step 1 holds a NaN or "
                       "infinite value in the rewards the environment returned"):
        meta.fit(tf_maml.rl.task_batches(env, 2, num_batches=2), verbose=0)
    for a, b in zip(before, [v.numpy() for v in meta.policy.weights]):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(tf_maml.guards.EpisodeError, match="An evaluation .* the rewards the "
                       "environment returned"):
        meta.evaluate(tf_maml.rl.task_batches(env, 2, num_batches=1), verbose=0)
    # Finite rewards whose policy gradient overflows: the steps are blamed.
    meta = tf_maml.rl.MetaPolicyGradient(tf_maml.rl.policies.mlp(ENV, hidden=(4,)), ENV,
                                         inner_lr=1e30, trajectories=2, outer_steps=1)
    meta.compile(optimizer="adam")
    with pytest.raises(tf_maml.guards.TrainingDivergedError, match="meta-step 1 is not finite"
                       ".*Its input was finite: the steps diverged"):
        meta.fit(tf_maml.rl.task_batches(ENV, 2, num_batches=1), verbose=0)


def test_bad_arguments_and_data_are_refused_before_compute():
    wrong = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])  # means only
    with pytest.raises(ValueError, match=r"needs \[batch, 4\].*GaussianHead"):
        tf_maml.rl.MetaPolicyGradient(wrong, ENV)
    policy = tf_maml.rl.policies.mlp(ENV, hidden=(4,))
    with pytest.raises(TypeError, match="TaskEnv"):
        tf_maml.rl.MetaPolicyGradient(policy, "Navigation2D")
    with pytest.raises(ValueError, match="estimator"):
        tf_maml.rl.MetaPolicyGradient(policy, ENV, estimator="dice")
    with pytest.raises(ValueError, match="one inner step"):
        tf_maml.rl.MetaPolicyGradient(policy, ENV, estimator="unbiased", inner_steps=2)
    with pytest.raises(ValueError, match="clip_ratio"):
        tf_maml.rl.MetaPolicyGradient(policy, ENV, clip_ratio=0.0)
    with pytest.raises(ValueError, match=r"`gae_lambda` must be a number in \[0, 1\]; received 1.5"):
        tf_maml.rl.MetaPolicyGradient(policy, ENV, gae_lambda=1.5)
    with pytest.raises(ValueError, match="meta-learned variables"):
        tf_maml.rl.MetaPolicyGradient(policy, ENV, inner_optimizer=tf_maml.rules.meta_sgd(0.1))
    meta = _meta()
    episodes = tf.data.Dataset.from_tensors(((tf.zeros([2, 5, 2]), tf.zeros([2, 5])),) * 2)
    with pytest.raises(ValueError, match="task_batches"):
        meta.fit(episodes, verbose=0)
    goals_3d = tf.data.Dataset.from_tensors({"tasks": tf.zeros([2, 3]),
                                             "seeds": tf.zeros([2, 2], tf.int32)})
    with pytest.raises(ValueError, match=r"\[T, 2\] floats"):
        meta.fit(goals_3d, verbose=0)


def test_discrete_actions_meta_train_on_cart_poles():
    keras.utils.set_random_seed(0)
    env = envs.CartPole(horizon=20)
    meta = tf_maml.rl.MetaPolicyGradient(tf_maml.rl.policies.mlp(env, hidden=(8,)), env,
                                         trajectories=3, outer_steps=1, eval_inner_steps=1)
    meta.compile(optimizer="adam")
    history = meta.fit(tf_maml.rl.task_batches(env, 2, num_batches=2), verbose=0).history
    assert 1.0 <= history["return"][0] <= 20.0  # one reward a step, at most the horizon
    assert meta.returns_by_step(next(iter(tf_maml.rl.task_batches(env, 2, num_batches=1)))
                                ).shape == (2, 2)


def test_gymnasium_bridge_runs_one_task_at_a_time_without_xla():
    gym = pytest.importorskip("gymnasium")
    del gym

    def set_pole(env, task):
        env.unwrapped.length = float(task[0])
        env.unwrapped.polemass_length = env.unwrapped.masspole * env.unwrapped.length

    env = envs.GymTaskEnv("CartPole-v1", set_pole, task_range=([0.25], [1.0]), horizon=10)
    policy = tf_maml.rl.policies.mlp(env, hidden=(4,))
    with pytest.raises(ValueError, match="parallel_tasks=1"):
        tf_maml.rl.MetaPolicyGradient(policy, env, parallel_tasks=2)
    meta = tf_maml.rl.MetaPolicyGradient(policy, env, trajectories=2, outer_steps=1)
    assert meta.parallel_tasks == 1
    meta.compile(optimizer="adam", jit_compile=True)
    with pytest.raises(ValueError, match="jit_compile=False"):
        meta.fit(tf_maml.rl.task_batches(env, 2, num_batches=1), verbose=0)
    meta.compile(optimizer="adam")
    history = meta.fit(tf_maml.rl.task_batches(env, 2, num_batches=1), verbose=0).history
    assert 1.0 <= history["pre_adaptation_return"][0] <= 10.0


def test_several_inner_steps_chain_the_adaptation_and_its_rule_state():
    # At the first outer step the adapted policy is the one that sampled the post-update
    # trajectories: probability ratios 1, standardized advantages, an objective of 0.
    meta = _meta(inner_steps=2, outer_steps=1, gae_lambda=0.0,
                 inner_optimizer=tf_maml.rules.adam(0.05))
    history = meta.fit(_batches(1), verbose=0).history
    assert abs(history["loss"][0]) < 1e-5, history
    # A stateful rule carries its state from step to step (Adam's moments).
    batch = next(iter(_batches(1)))
    trajectories = meta.sample_by_step(batch, 0)["trajectories"][0]
    given = [trajectories[k][0] for k in ("observations", "actions", "rewards", "mask")]
    params, state = meta.inner_loop.current_values()
    adapted = meta.adapt(*given, steps=2)
    x, y = meta._flat({k: trajectories[k][0] for k in ("observations", "actions", "log_probs",
                                                       "advantages", "mask")})
    y["log_probs"] = meta.distribution.log_prob(meta.policy(x), y["actions"])
    expected, _, _ = meta.inner_loop.adapt(params, state, x, y, 2, True)
    for value, want in zip(adapted.trainable_variables, expected):
        np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6)


def test_meta_gradient_through_layer_normalization_matches_finite_differences():
    """The second-order meta-gradient of the outer loss, samples held fixed, against central
    differences along random directions; the first-order one is not (the check can fail).
    Steps run within the exact second-order ops (recorded by the policy while traced)."""
    seen = []

    class Records(keras.layers.Layer):
        def call(self, inputs):
            seen.append(tf_maml.keras_patches.exact_gradients.active())
            return inputs

    keras.utils.set_random_seed(0)
    policy = keras.Sequential([
        keras.Input((2,)), keras.layers.Dense(8), keras.layers.LayerNormalization(), Records(),
        keras.layers.Activation("tanh"), tf_maml.rl.policies.GaussianHead(2, -0.5)])
    meta = tf_maml.rl.MetaPolicyGradient(policy, envs.Navigation2D(horizon=6), trajectories=4,
                                         inner_lr=0.5, normalize_advantages=False)
    meta.compile(optimizer="sgd")
    seen.clear()  # calls while the policy was built
    meta.train_on_batch(next(iter(_batches(1))))
    assert seen and all(mode is False for mode in seen)  # traced in the exact ops, no XLA
    batch = next(iter(tf_maml.rl.task_batches(meta.env, 2, seed=0, num_batches=1)))
    params, state = meta.inner_loop.current_values()
    sampled = sampling.sample_adapting(meta, params, state, batch["tasks"], batch["seeds"], 1, True)
    second_order = meta.outer_gradients(sampled)[0]
    meta.first_order = True
    first_order = meta.outer_gradients(sampled)[0]
    variables, rng = meta.policy.trainable_variables, np.random.default_rng(0)
    start = [v.numpy() for v in variables]
    for _ in range(2):
        direction = [rng.standard_normal(s.shape) for s in start]
        norm = np.sqrt(sum(np.sum(d * d) for d in direction))
        losses = []
        for sign in (1.0, -1.0):
            for v, s, d in zip(variables, start, direction):
                v.assign(s + sign * 1e-3 * d / norm)
            losses.append(float(meta.outer_gradients(sampled)[1]))
        for v, s in zip(variables, start):
            v.assign(s)
        numeric = (losses[0] - losses[1]) / 2e-3
        exact, first = (sum(float(np.sum(g * d)) / norm for g, d in zip(grads, direction))
                        for grads in (second_order, first_order))
        assert abs(exact - numeric) < 5e-3 * abs(numeric) + 1e-4, (exact, numeric)
        assert abs(first - numeric) > 5e-2 * abs(numeric), (first, numeric)
