"""The meta-gradient estimators of tf_maml.rl against a closed form (a Gaussian bandit).

One step, one action dimension: the policy's mean is a weight `theta`, its
standard deviation `sigma` fixed; the reward is `-(a - g)^2`. With `K`
trajectories per task and inner step size `alpha`, the adapted mean is
`theta' = theta + alpha * g_hat`, `g_hat` the policy-gradient estimate
`mean_k (a_k - theta) / sigma^2 * r_k`, and the expected return after
adaptation, with `d = theta - g`, is

    M(theta) = -(d^2 - 4 alpha d^2 + alpha^2 E[g_hat^2] + sigma^2),
    E[g_hat^2] = 4 d^2 + (d^4 / sigma^2 + 14 d^2 + 15 sigma^2) / K,

(moments of a normal), so

    dM/dtheta = -(2d - 8 alpha d + alpha^2 (8d + (4 d^3 / sigma^2 + 28 d) / K)).

The first-order meta-gradient (inner gradient constant, no sampling term)
has the expectation `-2 d (1 - 2 alpha)`.
"""

import numpy as np
import tensorflow as tf

import tf_maml
from helpers import bandit_policy, Bandit

THETA, GOAL, SIGMA, ALPHA, K = 0.0, -0.8, 1.0, 0.2, 8
BATCHES, TASKS = 40, 100
T_999 = 3.56  # Student's t, 39 degrees of freedom, two-sided 99.9 %


def closed_form(first_order):
    d = THETA - GOAL
    if first_order:
        return -2 * d * (1 - 2 * ALPHA)
    return -(2 * d - 8 * ALPHA * d
             + ALPHA ** 2 * (8 * d + (4 * d ** 3 / SIGMA ** 2 + 28 * d) / K))


def estimates(estimator, first_order):
    """Batch means of the estimated gradient of the expected return with respect to theta."""
    env = Bandit(GOAL)
    policy, head = bandit_policy(THETA, SIGMA)
    meta = tf_maml.rl.MetaPolicyGradient(
        policy, env, inner_lr=ALPHA, trajectories=K, estimator=estimator,
        first_order=first_order, baseline=None, normalize_advantages=False, discount=1.0,
        parallel_tasks=10)
    gradient = tf.function(meta.meta_gradients)
    bias = [i for i, v in enumerate(policy.trainable_variables) if v is head.mean.bias][0]
    batches = tf_maml.rl.task_batches(env, TASKS, seed=3, num_batches=BATCHES)
    # meta_gradients differentiates the loss, the negated objective.
    return np.array([-float(gradient(batch)[bias][0]) for batch in batches])


def interval(values):
    return values.mean(), T_999 * values.std(ddof=1) / np.sqrt(len(values))


def test_unbiased_estimator_matches_the_closed_form_and_lvc_does_not():
    mean, half_width = interval(estimates("unbiased", first_order=False))
    exact = closed_form(first_order=False)
    assert abs(mean - exact) < half_width, (mean, half_width, exact)
    assert half_width < 0.25 * abs(exact)  # an interval tight enough to mean something
    # ProMP's low-variance objective is biased here (its expectation is about -0.97).
    lvc_mean, lvc_half_width = interval(estimates("lvc", first_order=False))
    assert abs(lvc_mean - exact) > lvc_half_width, (lvc_mean, lvc_half_width, exact)


def test_first_order_estimates_the_first_order_gradient():
    # (First order, both estimators give the same meta-gradient: test_rl_meta_learner.py.)
    mean, half_width = interval(estimates("lvc", first_order=True))
    assert abs(mean - closed_form(first_order=True)) < half_width, (mean, half_width)
    assert abs(mean - closed_form(first_order=False)) > half_width  # orders differ


def test_the_closed_form_and_why_neither_estimator_is_dice_at_both_levels():
    """NumPy, independent of tf_maml: pathwise (reparameterized) derivatives of the bandit's
    expected return after adaptation agree with the closed form; the score-function form
    tf_maml's "unbiased" estimator computes agrees too; DiCE at both levels (its inner
    Hessian holds the score's outer product, and the outer objective the pre-update
    score as well) does not."""
    rng = np.random.default_rng(0)
    d, alpha, sigma, count = THETA - GOAL, ALPHA, SIGMA, 2_000_000
    noise = rng.standard_normal((count, K))
    rewards = -(d + sigma * noise) ** 2
    adapted = d + alpha * (noise / sigma * rewards).mean(1)   # theta' - goal
    post_return, post_gradient = -(adapted ** 2 + sigma ** 2), -2 * adapted
    score = noise.sum(1) / sigma
    pathwise = post_gradient * (1 + alpha * (noise / sigma * -2 * (d + sigma * noise)).mean(1))
    unbiased = (post_gradient * (1 - alpha * (rewards / sigma ** 2).mean(1))
                + (post_return - post_return.mean()) * score)
    dice_both = (post_gradient * (1 + alpha * ((noise ** 2 - 1) * rewards / sigma ** 2).mean(1))
                 + (post_return - post_return.mean()) * score)
    exact = closed_form(first_order=False)
    for name, values in (("pathwise", pathwise), ("unbiased", unbiased), ("dice", dice_both)):
        half_width = 3.3 * values.std() / np.sqrt(count)
        assert (abs(values.mean() - exact) < half_width) == (name != "dice"), name
