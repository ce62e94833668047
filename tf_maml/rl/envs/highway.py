"""highway-env's highway driving as a task family, through the gymnasium bridge: a task is
the traffic (its density, the number of lanes, how the other drivers keep their distance
and how politely they change lanes)."""

import functools

import keras
import numpy as np

from tf_maml.learners.arguments import checked_int
from tf_maml.rl.envs.gym_bridge import GymTaskEnv, gymnasium, optional_module

# Task vector: (vehicles_density, lanes_count, other drivers' time headway [s], politeness).
TASK_FIELDS = ("vehicles_density", "lanes_count", "time_wanted", "politeness")
# Lanes in [1.5, 4.5) round to 2, 3 or 4 equally often.
DEFAULT_TASK_RANGE = ((0.5, 1.5, 0.5, 0.0), (2.0, 4.499, 2.5, 1.0))


def highway_env():
    """highway-env's module (importing it registers its gymnasium ids)."""
    return optional_module("highway_env", "tf_maml.rl.envs.HighwayTraffic runs highway-env",
                           'pip install highway-env (or tf_maml\'s extra: pip install '
                           '"tf_maml[driving]")')


@functools.cache
def _drivers_wrapper():
    gym = gymnasium()

    class DriversWrapper(gym.Wrapper):
        """Gives every other vehicle the task's time headway and politeness after each
        reset (highway-env draws the vehicles at reset; these are IDM/MOBIL's
        parameters, read per vehicle)."""

        time_wanted, politeness = 1.5, 0.0

        def reset(self, **kwargs):
            result = self.env.reset(**kwargs)
            controlled = set(map(id, self.env.unwrapped.controlled_vehicles))
            for vehicle in self.env.unwrapped.road.vehicles:
                if id(vehicle) not in controlled and hasattr(vehicle, "TIME_WANTED"):
                    vehicle.TIME_WANTED = self.time_wanted
                    vehicle.POLITENESS = self.politeness
            return result

    return DriversWrapper


def make_highway(horizon):
    """highway-env's `highway-fast-v0`: kinematics of the car and the 4 nearest, 5 meta-actions
    (lane left, idle, lane right, faster, slower), `horizon` decisions an episode."""
    highway_env()
    env = gymnasium().make("highway-fast-v0", config={"duration": horizon})
    return _drivers_wrapper()(env)


def set_traffic(env, task):
    """Applies a task vector (`TASK_FIELDS`) before the reset that draws the traffic."""
    density, lanes, time_wanted, politeness = (float(v) for v in task)
    env.unwrapped.configure({"vehicles_density": density, "lanes_count": int(round(lanes))})
    env.time_wanted, env.politeness = time_wanted, politeness


@keras.saving.register_keras_serializable(package="tf_maml.rl.envs")
class HighwayTraffic(GymTaskEnv):
    """Driving on a highway among other drivers: each task is new traffic.

    highway-env's `highway-fast-v0` (Leurent 2018): the agent's car chooses
    one of 5 meta-actions (change lane left or right, idle, faster,
    slower) once a second and sees its own position and speed and those
    of the 4 nearest vehicles; its reward favours high speed and the right
    lane, and a collision ends the episode with the lowest reward
    (highway-env's defaults, normalized to [0, 1] a step). A task is the
    traffic: `vehicles_density`, `lanes_count` (rounded: 2, 3 or 4 by
    default, equally often), and the other
    drivers' IDM time headway `time_wanted` (s) and MOBIL `politeness`,
    drawn uniformly in `task_range`. Needs `pip install highway-env`. Not a
    pure function (see `GymTaskEnv`).

    Args:
        horizon: decisions (seconds) an episode.
        task_range: `(low, high)`, four numbers each, in `TASK_FIELDS` order.
        workers: processes that step highway-env (`GymTaskEnv`'s): its
            simulation in Python is what takes the time.
    """

    def __init__(self, horizon=30, task_range=DEFAULT_TASK_RANGE, workers=0):
        horizon = checked_int(horizon, "horizon", 1)
        low, high = (np.asarray(v, np.float32) for v in task_range)
        if low.shape != (4,) or high.shape != (4,) or low[1] < 1 or low[0] <= 0:
            raise ValueError(f"`task_range` must be two sequences of 4 numbers {TASK_FIELDS}, "
                             f"with at least 1 lane and a positive density; received "
                             f"{task_range!r}.")
        super().__init__(functools.partial(make_highway, horizon), set_traffic,
                         task_range=(low, high), horizon=horizon, workers=workers)

    def get_config(self):
        return {"horizon": self.horizon,
                "task_range": [np.asarray(b).tolist() for b in self.task_range],
                "workers": self.workers}
