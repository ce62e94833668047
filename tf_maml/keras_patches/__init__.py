"""Everything of tf_maml that reaches into TensorFlow or Keras internals, fenced here.

- `exact_gradients`: exact second derivatives of Keras' moments and max-pool;
- `fused_batch_norm`: BatchNormalization on TensorFlow's fused kernels, and
  statistics that ignore padding examples;
- `internals`: every other private Keras function or attribute tf_maml reads.

They are plain TensorFlow/Keras and import nothing of the meta-learner. They
were written for Keras `WRITTEN_FOR`; another version gets a warning, and
`pytest tests/test_exact_gradients.py tests/test_meta_gradients.py` says
whether the patches still hold there.
"""

import warnings

import keras

WRITTEN_FOR = "3.15"

if ".".join(keras.__version__.split(".")[:2]) != WRITTEN_FOR:
    warnings.warn(
        f"tf_maml's Keras patches were written for Keras {WRITTEN_FOR}.x; this is Keras "
        f"{keras.__version__}. Run tests/test_exact_gradients.py and tests/test_meta_gradients.py "
        "to check that second-order meta-gradients are still exact.",
        stacklevel=2,
    )

from tf_maml.keras_patches.exact_gradients import exact_second_order, max_pool_by_slices  # noqa: E402
from tf_maml.keras_patches.fused_batch_norm import (  # noqa: E402
    current_example_weights, example_weights, fused_kernels, stock_kernels,
)
from tf_maml.keras_patches.internals import (  # noqa: E402
    BuildsItself, all_layers, call_has_training_arg, compile_loss, compile_metrics,
    compute_output_spec, copy_compile_metrics, export_value, is_multi_worker,
    is_validation_within_fit,
    leaf_layers, loss_tracker, scale_loss_for_distribution, set_initial_epoch,
    unscale_loss_for_distribution, update_compile_metrics, with_example_mask,
)

__all__ = [
    "WRITTEN_FOR", "BuildsItself", "all_layers", "compile_loss", "compile_metrics",
    "is_validation_within_fit", "loss_tracker", "set_initial_epoch", "call_has_training_arg", "compute_output_spec",
    "copy_compile_metrics", "current_example_weights", "example_weights", "export_value",
    "exact_second_order", "fused_kernels", "is_multi_worker", "leaf_layers",
    "max_pool_by_slices", "scale_loss_for_distribution", "stock_kernels",
    "unscale_loss_for_distribution", "update_compile_metrics", "with_example_mask",
]
