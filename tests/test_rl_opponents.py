"""Rock-paper-scissors against reactive opponents (tf_maml.rl.envs.MatrixGameOpponents)."""

import itertools
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_maml.rl.experiment
from tf_maml.rl import envs, plots as rl_plots

from configs import opponents  # helpers put the repository on the path

PAYOFF = np.array(envs.matrix_game.ROCK_PAPER_SCISSORS)


def test_opponents_are_probability_rows_drawn_from_the_seed():
    env = envs.MatrixGameOpponents()
    tasks = env.sample_tasks(500, seed=[1, 2]).numpy()
    assert tasks.shape == (500, 12)
    rows = tasks.reshape(500, 4, 3)
    np.testing.assert_allclose(rows.sum(-1), 1.0, rtol=1e-5)
    assert (rows >= 0).all()
    np.testing.assert_array_equal(tasks, env.sample_tasks(500, seed=[1, 2]))
    # Concentration 0.3: most rows have a favourite move (habits to exploit).
    assert np.mean(rows.max(-1) > 0.6) > 0.5


def test_best_response_is_the_best_sequence_of_moves():
    """The opponent reacts to the agent's last move only, so the agent's moves decide
    everything it meets: the best of all 3^4 sequences is the best policy."""
    env = envs.MatrixGameOpponents(horizon=4)
    tasks = env.sample_tasks(6, seed=[0, 3]).numpy()
    strategies = tasks.reshape(6, 4, 3)
    best = np.full(6, -np.inf)
    for moves in itertools.product(range(3), repeat=4):
        value = strategies[:, 0] @ PAYOFF[moves[0]]
        for previous, move in zip(moves, moves[1:]):
            value = value + strategies[:, 1 + previous] @ PAYOFF[move]
        best = np.maximum(best, value)
    np.testing.assert_allclose(env.best_response_returns(tasks), best, rtol=1e-12)
    assert (best >= 0).all()  # against any strategy, some move does not lose on average


def test_the_opponent_plays_its_strategy_and_rewards_are_the_payoffs():
    env = envs.MatrixGameOpponents(horizon=2)
    strategy = np.array([[0.7, 0.2, 0.1], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0], [0.1, 0.1, 0.8]],
                        np.float32)
    batch = 6000
    tasks = tf.constant(np.tile(strategy.reshape(1, 12), (batch, 1)))
    seeds = tf.random.stateless_uniform([batch, 2], [0, 1], maxval=2**30, dtype=tf.int32)
    state, observation = env.reset(tasks, seeds)
    np.testing.assert_array_equal(observation, np.zeros((batch, 6)))
    agent = tf.constant(np.arange(batch) % 3, tf.int32)
    state, observation, reward, done = env.step(tasks, state, agent)
    opponent = np.argmax(observation[:, 3:], -1)
    np.testing.assert_array_equal(np.argmax(observation[:, :3], -1), agent)
    np.testing.assert_array_equal(reward, PAYOFF[agent.numpy(), opponent])
    assert not done.numpy().any()
    frequencies = np.bincount(opponent, minlength=3) / batch
    np.testing.assert_allclose(frequencies, strategy[0], atol=0.02)
    # Second round: the row of the agent's first move.
    _, observation, _, _ = env.step(tasks, state, tf.zeros([batch], tf.int32))
    opponent = np.argmax(observation[:, 3:], -1)
    for move in range(3):
        seen = np.bincount(opponent[agent.numpy() == move], minlength=3) / np.sum(agent == move)
        np.testing.assert_allclose(seen, strategy[1 + move], atol=0.03)


def test_settings_round_trip_and_bad_payoffs_are_refused():
    env = envs.MatrixGameOpponents(horizon=5, concentration=0.5)
    again = envs.deserialize(envs.serialize(env))
    assert (again.horizon, again.concentration) == (5, 0.5)
    np.testing.assert_array_equal(again.payoff, env.payoff)
    with pytest.raises(ValueError, match="`payoff` must be a square matrix"):
        envs.MatrixGameOpponents(payoff=[[1.0, 0.0]])
    with pytest.raises(ValueError, match="`concentration` must be a positive number"):
        envs.MatrixGameOpponents(concentration=0)


def test_opponents_run_reports_the_best_response_beside_the_baselines(tmp_path):
    config = opponents.get_config()
    config.meta_steps, config.steps_per_epoch, config.meta_batch_size = 2, 1, 2
    config.trajectories, config.env.horizon, config.policy.hidden = 2, 3, (4,)
    config.eval_tasks, config.eval_max_steps, config.verbose = 4, 1, 0
    keras.utils.set_random_seed(0)
    report = tf_maml.rl.experiment.run(config, str(tmp_path))
    assert len(report["return_by_step"]) == len(report["pretrained_return_by_step"]) == 2
    held_out = next(iter(tf_maml.rl.experiment.tasks(config, envs.MatrixGameOpponents(3),
                                                     "test", 1, meta_batch_size=4)))
    best = envs.MatrixGameOpponents(3).best_response_returns(held_out["tasks"].numpy())
    assert report["best_response_return"] == pytest.approx(best.mean(), abs=1e-3)
    # The exact expectation is above every sampled mean, up to its interval.
    assert report["best_response_return"] >= max(
        r - c for r, c in zip(report["return_by_step"], report["return_confidence_95"]))
    assert os.path.exists(tmp_path / "return_by_step.png")
    assert os.path.exists(tmp_path / "matches.png")


def test_match_figure_shows_the_moves_and_scores_of_each_step(tmp_path):
    # One opponent, two matches of 3 rounds, before and after one step.
    before = {"actions": np.array([[[0, 1, 2], [2, 2, 2]]]),
              "rewards": np.array([[[1.0, -1.0, 0.0], [-1.0, -1.0, 0.0]]])}
    after = {"actions": np.array([[[1, 1, 1], [1, 0, 1]]]),
             "rewards": np.array([[[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]]])}
    text = rl_plots.plot_matches({"trajectories": [before, after]}, tmp_path / "m.png",
                                 matches=2, title="run")
    assert text["panels"][0]["title"].startswith("before adaptation")
    assert "mean score of all 2 matches -1.0" in text["panels"][0]["title"]
    assert "after 1 inner step(s)" in text["panels"][1]["title"]
    assert "+2.5" in text["panels"][1]["title"]
    assert text["panels"][1]["xlabel"].startswith("round")
    assert os.path.getsize(tmp_path / "m.png") > 0
