"""TRPO as MetaPolicyGradient's outer update, against closed forms on a Gaussian bandit.

The bandit (tests/helpers.py): one step, the policy's mean is a weight
`theta`, its standard deviation `sigma` fixed, the reward `-(a - goal)^2`.
The KL divergence between two such policies is `(theta_1 - theta_2)^2 /
(2 sigma^2)`, exactly quadratic, so TRPO's step is known in closed form:

- without an inner step, the Fisher information is `1 / sigma^2` and the
  step moves `theta` by `sigma sqrt(2 max_kl)` along the surrogate's gradient;
- with one inner step of `alpha` on the "lvc" objective, task `t`'s adapted
  mean is `theta'_t = theta + alpha g_t(theta)` with `g_t(theta) =
  mean_k r_k (a_k - theta) / sigma^2 * exp(logpi_theta(a_k) - logpi_0(a_k))`,
  so `d theta'_t / d theta = 1 + alpha c_t`, `c_t = mean_k r_k ((a_k -
  theta)^2 / sigma^4 - 1 / sigma^2)`, and the adapted policy's Fisher
  information is `mean_t (1 + alpha c_t)^2 / sigma^2`.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml
from tf_maml.rl import envs, sampling, trpo

from helpers import Bandit, bandit_policy

THETA, GOAL, SIGMA, ALPHA, K, TASKS, MAX_KL = 0.0, -0.8, 0.5, 0.2, 8, 6, 0.01


def _bandit_meta(inner_steps, **kwargs):
    policy, head = bandit_policy(THETA, SIGMA)
    meta = tf_maml.rl.MetaPolicyGradient(
        policy, Bandit(GOAL), inner_lr=ALPHA, inner_steps=inner_steps, trajectories=K,
        baseline=None, normalize_advantages=False, discount=1.0, outer_update="trpo",
        max_kl=MAX_KL, cg_steps=2, **kwargs)  # 2 weights: 2 steps solve exactly
    meta.compile(optimizer="sgd")  # not used by TRPO
    return meta, head


def _batch(seed=4):
    return next(iter(tf_maml.rl.task_batches(Bandit(GOAL), TASKS, seed=seed, num_batches=1)))


def _per_task(trajectories, name):
    """`[T, K]`: a field of the bandit's one-step trajectories."""
    return np.asarray(trajectories[name]).reshape(TASKS, K)


def test_without_inner_step_the_step_is_sigma_sqrt_2_max_kl_along_the_gradient():
    meta, head = _bandit_meta(inner_steps=0)
    batch = _batch()
    sampled = meta.sample_by_step(batch, steps=0)["trajectories"][0]  # train_step's samples
    actions, rewards = _per_task(sampled, "actions"), _per_task(sampled, "advantages")
    gradient = np.mean(rewards * (actions - THETA) / SIGMA ** 2)
    kernel = head.mean.kernel.numpy()
    logs = meta.train_on_batch(batch, return_dict=True)
    moved = float(head.mean.bias.numpy()[0]) - THETA
    assert moved == pytest.approx(np.sign(gradient) * SIGMA * np.sqrt(2 * MAX_KL), rel=1e-4)
    assert logs["kl"] == pytest.approx(MAX_KL, rel=1e-4)  # the KL is exactly quadratic here
    np.testing.assert_array_equal(head.mean.kernel.numpy(), kernel)  # its input is 0
    assert meta.meta_iterations == 1


def test_fisher_vector_product_through_the_inner_step_matches_the_closed_form():
    meta, head = _bandit_meta(inner_steps=1)
    batch = _batch()
    with meta.meta_learning_ops():
        params, state = meta.inner_loop.current_values()
        sampled = sampling.sample_adapting(meta, params, state, batch["tasks"], batch["seeds"],
                                           1, True)
        ones = [tf.ones_like(p) for p in params]
        product = trpo.fisher_vector_product(meta, sampled, ones)
    pre = sampled["trajectories"][0]
    actions, rewards = _per_task(pre, "actions"), _per_task(pre, "advantages")
    c = np.mean(rewards * ((actions - THETA) ** 2 / SIGMA ** 4 - 1 / SIGMA ** 2), axis=1)
    fisher = np.mean((1 + ALPHA * c) ** 2) / SIGMA ** 2
    bias = [i for i, v in enumerate(meta.policy.trainable_variables) if v is head.mean.bias][0]
    # Third derivatives of the policy (the KL's Hessian through the inner gradient step).
    assert float(product[bias][0]) == pytest.approx(fisher + meta.cg_damping, rel=1e-4)
    assert fisher != pytest.approx(1 / SIGMA ** 2, rel=0.05)  # the inner step matters here


def _adapted(theta, actions, rewards):
    """`[T]`: each task's adapted mean from `theta`, its actions sampled at THETA ("lvc")."""
    ratio = np.exp(((actions - THETA) ** 2 - (actions - theta) ** 2) / (2 * SIGMA ** 2))
    return theta + ALPHA * np.mean(rewards * (actions - theta) / SIGMA ** 2 * ratio, axis=1)


def test_with_inner_step_the_step_is_the_natural_gradient_then_the_line_search():
    meta, head = _bandit_meta(inner_steps=1)
    batch = _batch()
    sampled = meta.sample_by_step(batch, steps=1)["trajectories"]  # train_step's samples
    actions, rewards = _per_task(sampled[0], "actions"), _per_task(sampled[0], "advantages")
    post_actions, post_rewards = (_per_task(sampled[1], "actions"),
                                  _per_task(sampled[1], "advantages"))
    c = np.mean(rewards * ((actions - THETA) ** 2 / SIGMA ** 4 - 1 / SIGMA ** 2), axis=1)
    adapted = _adapted(THETA, actions, rewards)
    post_gradient = np.mean(post_rewards * (post_actions - adapted[:, None]) / SIGMA ** 2, 1)
    gradient = np.mean((1 + ALPHA * c) * post_gradient)
    fisher = np.mean((1 + ALPHA * c) ** 2) / SIGMA ** 2
    full_step = np.sign(gradient) * np.sqrt(2 * MAX_KL / fisher)
    # The line search: the largest 0.8^k of the step that raises the surrogate within max_kl.
    for k in range(trpo.MAX_BACKTRACKS):
        fraction = trpo.BACKTRACK_RATIO ** k
        candidate = _adapted(THETA + fraction * full_step, actions, rewards)
        kl = np.mean((candidate - adapted) ** 2) / (2 * SIGMA ** 2)
        ratio = np.exp(((post_actions - adapted[:, None]) ** 2
                        - (post_actions - candidate[:, None]) ** 2) / (2 * SIGMA ** 2))
        if np.mean(post_rewards * ratio) > np.mean(post_rewards) and kl <= MAX_KL:
            break
    logs = meta.train_on_batch(batch, return_dict=True)
    moved = float(head.mean.bias.numpy()[0]) - THETA
    assert moved == pytest.approx(fraction * full_step, rel=1e-3), (moved, fraction, full_step)
    assert logs["kl"] == pytest.approx(kl, rel=1e-3)


def test_fisher_products_under_xla_fit_and_saved_settings(tmp_path):
    """Under XLA the Fisher-vector products differentiate TensorFlow's XlaDynamicUpdateSlice
    (the gradient of the policy's concatenation's gradient), whose gradient tf_maml adds:
    they match those without XLA on the same trajectories."""
    keras.utils.set_random_seed(0)
    env = envs.Navigation2D(horizon=5)
    meta = tf_maml.rl.MetaPolicyGradient(tf_maml.rl.policies.mlp(env, hidden=(4,)), env,
                                         trajectories=2, outer_update="trpo", max_kl=0.02,
                                         cg_steps=2)
    batches = tf_maml.rl.task_batches(env, 2, num_batches=2)
    sampled = {"trajectories": meta.sample_by_step(next(iter(batches)), 1)["trajectories"]}

    def fisher_vector_product(sampled):
        with meta.meta_learning_ops():
            params = meta.inner_loop.current_values()[0]
            return trpo.fisher_vector_product(meta, sampled, [tf.ones_like(p) for p in params])

    meta.compile(optimizer="sgd", jit_compile=False)  # (a whole TRPO step under XLA:
    # a minute of compiling for what the products below check)
    with tf_maml.exact_second_order(xla=True):
        compiled = tf.function(fisher_vector_product, jit_compile=True)(sampled)
    for a, b in zip(tf.function(fisher_vector_product)(sampled), compiled):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
    before = [v.numpy() for v in meta.policy.weights]
    history = meta.fit(batches, verbose=0).history
    assert set(history) == {"loss", "return", "pre_adaptation_return", "kl"}
    assert all(0 < kl <= 0.02 for kl in history["kl"]), history["kl"]
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(before, meta.policy.weights))
    assert meta.meta_iterations == 2
    meta.save(tmp_path / "meta.keras")
    loaded = keras.saving.load_model(tmp_path / "meta.keras")
    assert (loaded.outer_update, loaded.max_kl, loaded.cg_steps) == ("trpo", 0.02, 2)


def test_bad_trpo_settings_are_refused():
    policy = tf_maml.rl.policies.mlp(envs.Navigation2D(), hidden=(4,))
    with pytest.raises(ValueError, match=r"`outer_update` must be one of \('ppo', 'trpo'\)"):
        tf_maml.rl.MetaPolicyGradient(policy, envs.Navigation2D(), outer_update="natural")
    with pytest.raises(ValueError, match="`max_kl` must be a positive number"):
        tf_maml.rl.MetaPolicyGradient(policy, envs.Navigation2D(), outer_update="trpo",
                                      max_kl=0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        env = envs.Navigation2D(horizon=3)
        meta = tf_maml.rl.MetaPolicyGradient(tf_maml.rl.policies.mlp(env, hidden=(4,)), env,
                                             trajectories=2, outer_update="trpo")
        meta.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="outer_update='trpo' runs on one replica"):
        meta.fit(tf_maml.rl.task_batches(env, 2, num_batches=1), verbose=0)
