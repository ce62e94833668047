"""Where a `GymTaskEnv`'s gymnasium environments live: in this process, or in worker processes.

A pool holds environments of one family; `reset(tasks, seeds)` applies a task to
environment `i` and resets it with its seed, `step(tasks, actions)` steps the
environments whose episode has not ended. `LocalPool` steps them one after the
other here; `ProcessPool` splits them among worker processes, each a `LocalPool`,
which step their parts at once: for a simulator written in Python (highway-env)
or a slow one, the second core does half the work. The rollouts are the same:
each environment is reset with its own task and seed, wherever it lives.
"""

import multiprocessing
import signal
import time
import traceback
import weakref

import numpy as np

# Seconds a worker may take to answer one reset or step of its part of the batch: a
# simulator stuck in a loop is reported (and its workers ended) instead of waited for.
REPLY_TIMEOUT_SECONDS = 600.0


def gym_seed(seed):
    """The gymnasium `reset` seed (a non-negative int) of a stateless seed: int32 `[2]`."""
    high, low = np.asarray(seed, np.int32).view(np.uint32).tolist()
    return (high << 32) | low


class LocalPool:
    """Gymnasium environments stepped one after the other in this process.

    Args:
        make_environment: `() -> ` a new gymnasium environment of the family.
        set_task, reward_fn, success_fn: as `GymTaskEnv`'s.
        first: an environment made already (the one whose spaces were read), or None.
    """

    alive = True  # closed, it makes new environments at the next reset

    def __init__(self, make_environment, set_task, reward_fn, success_fn, first=None):
        self.make_environment, self.set_task = make_environment, set_task
        self.reward_fn, self.success_fn = reward_fn, success_fn
        self.envs = [first] if first is not None else []
        self._space = None

    def _gym_action(self, action):
        space = self._space
        if hasattr(space, "n"):  # Discrete
            return int(action) + int(space.start)
        return np.clip(action, space.low, space.high).astype(space.dtype)

    def reset(self, tasks, seeds):
        """Observations `[B, ...]` after applying `tasks[i]` and resetting with `seeds[i]`."""
        while len(self.envs) < len(tasks):
            self.envs.append(self.make_environment())
        self._space = self.envs[0].action_space
        observations = []
        for env, task, seed in zip(self.envs, tasks, seeds):
            if self.set_task is not None:
                self.set_task(env, task)
            observations.append(np.reshape(env.reset(seed=gym_seed(seed))[0], -1))
        self._done = np.zeros(len(tasks), bool)
        self._last = np.array(observations, np.float32)
        return self._last.copy()

    def step(self, tasks, actions):
        """`(observations, rewards, done, succeeded)` of one step of the environments still
        running; an ended one keeps its last observation, reward 0 and done."""
        rewards = np.zeros(len(self._done), np.float32)
        succeeded = np.zeros(len(self._done), bool)
        for i in np.flatnonzero(~self._done):
            action = self._gym_action(actions[i])
            observation, reward, terminated, truncated, info = self.envs[i].step(action)
            if self.reward_fn is not None:
                reward = self.reward_fn(tasks[i], reward, info, action)
            self._last[i] = np.reshape(observation, -1)
            rewards[i] = reward
            self._done[i] = terminated or truncated
            succeeded[i] = self.success_fn is not None and bool(self.success_fn(info))
        return self._last.copy(), rewards, self._done.copy(), succeeded

    def close(self):
        for env in self.envs:
            env.close()
        self.envs = []


def _serve(connection, pickled_pool):
    """A worker process: a `LocalPool` that answers `(method, *arguments)` with `("ok",
    result)` or `("error", traceback)` until told to close."""
    import cloudpickle  # noqa: PLC0415 (gymnasium's dependency; only the worker needs it)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    pool = cloudpickle.loads(pickled_pool)
    while True:
        method, *arguments = connection.recv()
        if method == "close":
            pool.close()
            connection.close()
            return
        try:
            connection.send(("ok", getattr(pool, method)(*arguments)))
        except Exception:  # noqa: BLE001 (the parent raises it, with the worker's traceback)
            connection.send(("error", traceback.format_exc()))


class ProcessPool:
    """Gymnasium environments in `workers` processes, each stepping its part of the batch.

    The workers are forked from multiprocessing's fork server, a fresh interpreter that
    has imported this package but run nothing (forking a process that runs TensorFlow is
    not safe): the first pool of a process pays for one import of TensorFlow, the others
    start at once. `make_environment` and the task functions travel by cloudpickle
    (gymnasium's dependency): lambdas and closures work, and each worker imports what they
    use. A worker's error is raised here with its traceback; a worker that dies, or does
    not answer within `REPLY_TIMEOUT_SECONDS`, ends the pool (the bridge's next reset
    starts another).
    """

    def __init__(self, make_environment, set_task, reward_fn, success_fn, workers):
        import cloudpickle  # noqa: PLC0415

        pickled = cloudpickle.dumps(LocalPool(make_environment, set_task, reward_fn,
                                              success_fn))
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])  # before its server starts
        self._connections, self._processes = [], []
        for _ in range(workers):
            parent, child = context.Pipe()
            process = context.Process(target=_serve, args=(child, pickled), daemon=True)
            process.start()
            child.close()
            self._connections.append(parent)
            self._processes.append(process)
        # Workers end when the pool is closed, or collected, or at exit (daemons).
        self._finalizer = weakref.finalize(self, _shut_down, self._connections,
                                           self._processes)

    @property
    def alive(self):
        """False once closed, or after a worker died."""
        return self._finalizer.alive

    def _call(self, method, *arrays):
        """`method` on each worker with its slice of `arrays` (all workers at once), the
        results concatenated in batch order. Every reply is read before a worker's error is
        raised, so the next call reads its own; a call cut short (a worker dead or not
        answering in time, Ctrl-C) ends the pool instead, leaving no reply unread."""
        parts = [np.array_split(a, len(self._connections)) for a in arrays]
        busy = [k for k in range(len(self._connections)) if len(parts[0][k])]
        replies = {}
        deadline = time.monotonic() + REPLY_TIMEOUT_SECONDS
        try:
            for k in busy:
                self._connections[k].send((method, *(p[k] for p in parts)))
            for k in busy:
                if not self._connections[k].poll(max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(
                        f"Worker {k} of the gymnasium pool did not answer `{method}` within "
                        f"{REPLY_TIMEOUT_SECONDS:g} s (a simulator stuck?); its workers were "
                        "ended, the next reset starts new ones.")
                replies[k] = self._connections[k].recv()
        except (EOFError, OSError) as error:  # a worker died: this pool is done
            codes = [process.exitcode for process in self._processes]
            self.close()
            raise RuntimeError(f"A worker of the gymnasium pool exited (exit codes {codes}); "
                               "the next reset starts new workers.") from error
        except BaseException:  # a timeout or Ctrl-C: unread replies would answer the next call
            self._end_workers()
            raise
        errors = [f"Worker {k} of the gymnasium pool failed:\n{reply[1]}"
                  for k, reply in replies.items() if reply[0] == "error"]
        if errors:
            raise RuntimeError("\n".join(errors))
        results = [replies[k][1] for k in busy]
        if isinstance(results[0], tuple):
            return tuple(np.concatenate(r) for r in zip(*results))
        return np.concatenate(results)

    def reset(self, tasks, seeds):
        return self._call("reset", tasks, seeds)

    def step(self, tasks, actions):
        return self._call("step", tasks, actions)

    def close(self):
        self._finalizer()

    def _end_workers(self):
        """Kills the workers (one is stuck: asking it to close would wait) and closes."""
        for process in self._processes:
            process.kill()
        self.close()


def _shut_down(connections, processes):
    """Asks each worker to close its environments and exit; ends those that do not."""
    for connection, process in zip(connections, processes):
        try:
            connection.send(("close",))
        except (BrokenPipeError, OSError):
            pass
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
        connection.close()
