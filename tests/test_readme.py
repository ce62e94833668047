"""The README's example runs as written (with fewer meta-steps)."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_example_runs(tmp_path, monkeypatch):
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert "steps_per_epoch=1000, epochs=70" in code
    code = code.replace("steps_per_epoch=1000, epochs=70", "steps_per_epoch=20, epochs=2")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["maml"].optimizer.iterations.numpy() == 40
    assert os.path.exists(tmp_path / "serving" / "saved_model.pb")
    assert os.path.exists(tmp_path / "adaptive" / "saved_model.pb")
