"""The README's example runs as written (with fewer meta-steps)."""

import os
import re
import types

import numpy as np
import tensorflow as tf

from helpers import ROOT


def test_readme_example_runs(tmp_path, monkeypatch):
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert "steps_per_epoch=1000, epochs=70" in code
    code = code.replace("steps_per_epoch=1000, epochs=70", "steps_per_epoch=20, epochs=2")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["maml"].optimizer.iterations.numpy() == 40
    # The two SavedModels serve what the meta-learner computes.
    ns = types.SimpleNamespace(**namespace)
    serving = tf.saved_model.load(str(tmp_path / "serving"))  # held: its function needs it
    served = serving.serve(ns.query_x[0])
    np.testing.assert_allclose(served, ns.adapted.predict(ns.query_x[0], verbose=0), atol=1e-5)
    # One serving answer (issue 27): the adaptive SavedModel answers as the README's
    # adapted model, on the same task, and says how many steps it takes.
    adaptive = tf.saved_model.load(str(tmp_path / "adaptive"))
    np.testing.assert_allclose(
        adaptive.adapt_and_predict(ns.support_x[0], ns.support_y[0], ns.query_x[0]),
        ns.adapted.predict(ns.query_x[0], verbose=0), atol=1e-5)
    assert int(adaptive.inner_steps) == 10 and int(adaptive.inner_steps_10()) == 10
