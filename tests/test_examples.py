"""docs/examples.md runs as written, on fewer meta-training tasks, and does what it says."""

import os
import re
import types

import numpy as np
import tensorflow as tf

from helpers import ROOT


def example(heading, tasks, monkeypatch, tmp_path):
    """Runs the code block under `heading` with META_TASKS = `tasks`; its namespace."""
    text = open(os.path.join(ROOT, "docs", "examples.md"), encoding="utf-8").read()
    section = text.split(f"## {heading}", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert re.search(r"^META_TASKS = \d+$", code, re.M)
    code = re.sub(r"^META_TASKS = \d+$", f"META_TASKS = {tasks}", code, flags=re.M)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "docs/examples.md", "exec"), namespace)  # noqa: S102
    return types.SimpleNamespace(**namespace)


def test_two_heads(monkeypatch, tmp_path):
    ns = example("Two heads", 64, monkeypatch, tmp_path)
    assert ns.maml.optimizer.iterations.numpy() == 8  # 2 epochs of 64 tasks in batches of 16
    logged = set(ns.history.history)
    for name in ("loss", "cls_loss", "dist_loss", "cls_accuracy", "dist_mae"):
        assert {name, "val_" + name} <= logged
    assert {k: v.shape for k, v in ns.predictions.items()} == {"cls": (15, 3), "dist": (15, 1)}
    served = tf.saved_model.load(str(tmp_path / "two_heads_adaptive"))
    inputs = sorted(served.signatures["serving_default"].structured_input_signature[1])
    assert inputs == ["query_x_point", "support_x_point", "support_y_cls", "support_y_dist"]
    (support_x, support_y), (query_x, _) = ns.test_support, ns.test_query
    one = lambda structure: {k: v[0] for k, v in structure.items()}  # noqa: E731
    outputs = served.adapt_and_predict(one(support_x), one(support_y), one(query_x))
    for name in ("cls", "dist"):
        np.testing.assert_allclose(outputs[name], ns.predictions[name], atol=1e-5)


def test_text_classification(monkeypatch, tmp_path):
    ns = example("Few-shot text classification", 32, monkeypatch, tmp_path)
    assert ns.maml.optimizer.iterations.numpy() == 4
    results = ns.maml.evaluate(ns.test_support, ns.test_query, batch_size=20, return_dict=True,
                               verbose=0)
    assert 0.0 <= results["accuracy"] <= 1.0 and np.isfinite(results["loss"])
    assert ns.adapted.predict(ns.test_query[0][0], verbose=0).shape == (12, 3)


def test_frozen_backbone_is_neither_adapted_nor_meta_trained(monkeypatch, tmp_path):
    ns = example("A pretrained backbone", 64, monkeypatch, tmp_path)
    # The example ran: the backbone as pre-trained, the head meta-trained (4 steps).
    assert ns.anil.optimizer.iterations.numpy() == 4
    pretrained = [w.copy() for w in ns.backbone.get_weights()]
    head = [w.copy() for w in ns.model.get_layer("head").get_weights()]
    assert [id(v) for v in ns.model.trainable_variables] == [
        id(v) for v in ns.model.get_layer("head").trainable_variables
    ]
    ns.anil.fit(*ns.episodes(32, ns.train_shapes), batch_size=16, epochs=1, verbose=0)
    for before, after in zip(pretrained, ns.backbone.get_weights()):
        np.testing.assert_array_equal(before, after)  # not meta-trained
    assert any(np.abs(a - b).max() > 1e-4
               for a, b in zip(head, ns.model.get_layer("head").get_weights()))
    (support_x, support_y), _ = ns.test_support, ns.test_query
    adapted = ns.anil.adapt(support_x[0], support_y[0])
    for before, after in zip(pretrained, adapted.get_layer("backbone").get_weights()):
        np.testing.assert_array_equal(before, after)  # not adapted
    head_now = ns.model.get_layer("head").get_weights()
    assert any(np.abs(a - b).max() > 1e-4
               for a, b in zip(head_now, adapted.get_layer("head").get_weights()))
