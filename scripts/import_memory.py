"""Peak RSS of a Python process after importing the given modules.

The floor under any peak-memory figure of a framework: for example

  python scripts/import_memory.py tensorflow keras
  python scripts/import_memory.py tensorflow keras tf_maml
  $TORCH_PY scripts/import_memory.py torch

Plain `sys.argv` rather than absl flags, so that it runs in a peer's venv too.
"""

import importlib
import resource
import sys

if __name__ == "__main__":
    for name in sys.argv[1:]:
        importlib.import_module(name)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS after importing {', '.join(sys.argv[1:])}: {peak_mb:.0f} MB")
