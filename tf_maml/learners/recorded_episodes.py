"""The format of the episodes a meta-learner has seen, kept with it.

`RecordedEpisodes` records the spec of one example and of its labels from
the first episodes that pass the entry checks (`tf_maml.learners.entry_checks`),
saves it in the build config, and answers `example_spec` and `label_spec`
for `adapt`, `export_adaptive` and the served metrics.
"""

import tensorflow as tf

from tf_maml import episodes as episodes_lib
from tf_maml.learners import labels
from tf_maml.learners.entry_checks import model_inputs


class RecordedEpisodes:
    """Mixed into `MAML`: the format of the first episodes that passed `prepare`.

    Kept in the build config, so a loaded meta-learner knows it: `adapt`,
    `export_adaptive` and the served metrics read it.
    """

    def get_build_config(self):
        if self._episode_spec is None:
            return super().get_build_config()
        return {
            "episodes": {
                "x": episodes_lib.spec_to_config(self.example_spec),
                "y": episodes_lib.spec_to_config(self.label_spec),
            }
        }

    def build_from_config(self, config):
        if "episodes" not in config:
            return super().build_from_config(config)
        spec = config["episodes"]
        if "features" in spec:  # saved before nested episodes (one input, one output)
            x = tf.TensorSpec(spec["features"], spec["x_dtype"])
            y = tf.TensorSpec(spec["label_shape"], spec["label_dtype"])
        else:
            x, y = (episodes_lib.spec_from_config(spec[key]) for key in ("x", "y"))
        self._episode_spec = episodes_lib.EpisodeSpec(num_tasks=None, x=x, y=y)
        self._build_for(x)

    @property
    def example_spec(self):
        """The spec of one example (nested for several inputs): from the episodes
        seen, or the model's inputs."""
        if self._episode_spec is not None:
            return episodes_lib.plain(self._episode_spec.x)
        inputs = model_inputs(self.model)
        if inputs is None:
            raise ValueError(
                f"The example shape of {self.model.name!r} is unknown: hand episodes to "
                "fit/evaluate first, or give the wrapped model an Input."
            )
        return episodes_lib.per_example(inputs, axes=1)

    @property
    def example_shape(self):
        """Shape of one example, for a model with one input (else see `example_spec`)."""
        spec = self.example_spec
        if tf.nest.is_nested(spec):
            raise ValueError(
                f"{self.model.name!r} takes several inputs, {episodes_lib.describe(spec)} per "
                "example: read example_spec instead of example_shape."
            )
        return tuple(spec.shape)

    @property
    def label_spec(self):
        """The spec of one example's labels (nested for several outputs), from the episodes seen."""
        if self._episode_spec is None:
            raise ValueError(
                "The label format is unknown: call fit() or evaluate() on episodes first."
            )
        return episodes_lib.plain(self._episode_spec.y)

    def _labelled_outputs(self, example_spec, label_spec, root="y"):
        """Each label tensor with its model output (`tf_maml.labels.labelled_outputs`)."""
        outputs = self.inner_loop.output_spec(example_spec)
        return labels.labelled_outputs(label_spec, outputs, self.output_names, root)
