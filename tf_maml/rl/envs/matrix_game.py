"""A repeated matrix game against an opponent drawn per task: game AI that adapts to its opponent."""

import keras
import numpy as np
import tensorflow as tf

from tf_maml.learners.arguments import checked_int, checked_positive
from tf_maml.rl.envs.base import Discrete, TaskEnv

ROCK_PAPER_SCISSORS = ((0.0, -1.0, 1.0), (1.0, 0.0, -1.0), (-1.0, 1.0, 0.0))


@keras.saving.register_keras_serializable(package="tf_maml.rl.envs")
class MatrixGameOpponents(TaskEnv):
    """A match of `horizon` rounds of a two-player matrix game; a task is an opponent.

    Each round both players choose one of `n` actions at once and the agent
    receives `payoff[a][o]` (default rock-paper-scissors: 1 for a win, -1 for a
    loss, 0 for a tie). An opponent is a reactive mixed strategy: the
    probabilities of its actions in the first round and after each action the
    agent took in the round before (`n + 1` rows of `n`), so an opponent may
    favour one action, answer the agent's last move with what beats it, copy
    it, or mix these. The task parameter is those rows, flattened (`[(n + 1)
    * n]`); tasks draw each row from a Dirichlet distribution of
    `concentration` (below 1: opponents with strong habits). No single policy
    beats them all (against rock-paper-scissors opponents drawn so, the
    expected return of any fixed strategy is 0); a policy that has played a
    few matches against one can exploit it.

    The observation is the agent's and the opponent's actions in the round
    before, one-hot (zeros in the first round): `[2 n]`.
    `best_response_returns(tasks)` gives the expected return of the best
    policy against each opponent (dynamic programming over the agent's last
    action), the ceiling to compare an adapted policy with.

    Example:

    ```python
    env = tf_maml.rl.envs.MatrixGameOpponents(horizon=20)
    opponents = env.sample_tasks(20, seed=[0, 0])          # [20, 12]
    env.best_response_returns(opponents)                  # [20], NumPy
    ```
    """

    def __init__(self, horizon=20, payoff=ROCK_PAPER_SCISSORS, concentration=0.3):
        self.horizon = checked_int(horizon, "horizon", 1)
        self.payoff = np.asarray(payoff, np.float32)
        if (self.payoff.ndim != 2 or self.payoff.shape[0] != self.payoff.shape[1]
                or self.payoff.shape[0] < 2 or not np.isfinite(self.payoff).all()):
            raise ValueError(f"`payoff` must be a square matrix of finite numbers, at least "
                             f"2 x 2 (the agent's payoff by its action and the opponent's); "
                             f"received {payoff!r}.")
        self.n = self.payoff.shape[0]
        self.concentration = checked_positive(concentration, "concentration")
        self.action_space = Discrete(self.n)
        self.observation_size = 2 * self.n
        self.task_size = (self.n + 1) * self.n

    def strategies(self, tasks):
        """`[B, n + 1, n]`: each opponent's action probabilities, first round first."""
        return tf.reshape(tasks, [-1, self.n + 1, self.n])

    def sample_tasks(self, count, seed):
        shape = [count, self.n + 1, self.n]
        gamma = tf.random.stateless_gamma(shape, seed, alpha=self.concentration)
        # Rows of tiny gamma draws can underflow to 0: a uniform row then.
        rows = tf.math.divide_no_nan(gamma, tf.reduce_sum(gamma, -1, keepdims=True))
        rows = tf.where(tf.reduce_sum(rows, -1, keepdims=True) > 0, rows, 1.0 / self.n)
        return tf.reshape(rows, [count, self.task_size])

    def reset(self, tasks, seeds):
        # The opponent's draws of the whole match, from each environment's seed.
        noise = tf.map_fn(lambda seed: tf.random.stateless_uniform([self.horizon], seed),
                          tf.convert_to_tensor(seeds, tf.int32),
                          fn_output_signature=tf.float32)
        batch = tf.shape(tasks)[0]
        observation = tf.zeros([batch, self.observation_size])
        return (noise, tf.zeros([batch], tf.int32), observation), observation

    def step(self, tasks, state, action):
        noise, round_, observation = state
        strategies = self.strategies(tasks)
        previous = observation[:, : self.n]  # the agent's last action, one-hot (zeros at first)
        first = tf.cast(tf.equal(round_, 0), tf.float32)[:, None]
        after = tf.einsum("bk,bkn->bn", previous, strategies[:, 1:])
        probabilities = first * strategies[:, 0] + (1.0 - first) * after
        draw = tf.gather(noise, tf.minimum(round_, self.horizon - 1), axis=1, batch_dims=1)
        cumulative = tf.cumsum(probabilities, axis=-1)
        opponent = tf.reduce_sum(tf.cast(cumulative < draw[:, None], tf.int32), -1)
        opponent = tf.minimum(opponent, self.n - 1)  # rounding of the last cumulative sum
        action = tf.cast(action, tf.int32)
        reward = tf.gather_nd(self.payoff, tf.stack([action, opponent], -1))
        observation = tf.concat([tf.one_hot(action, self.n), tf.one_hot(opponent, self.n)], -1)
        done = tf.zeros_like(reward, tf.bool)
        return (noise, round_ + 1, observation), observation, reward, done

    def best_response_returns(self, tasks):
        """`[B]` (NumPy): the expected return of a match of the best policy against each
        opponent. The opponent's next action depends on the agent's last one only, so the
        best policy is a function of it and the round: backward induction."""
        strategies = np.asarray(tasks, np.float64).reshape(-1, self.n + 1, self.n)
        # expected[b, s, a]: the payoff of action a against the strategy row s.
        expected = np.einsum("bsn,an->bsa", strategies, self.payoff.astype(np.float64))
        value = np.zeros(strategies.shape[:1] + (self.n,))  # by the agent's last action
        for _ in range(self.horizon - 1):
            value = np.max(expected[:, 1:] + value[:, None, :], axis=-1)
        return np.max(expected[:, 0] + value, axis=-1)

    def get_config(self):
        return {"horizon": self.horizon, "payoff": self.payoff.tolist(),
                "concentration": self.concentration}
