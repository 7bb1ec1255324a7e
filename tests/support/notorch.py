"""Python source that makes ``import torch`` fail in the child interpreter it starts."""

from __future__ import annotations

import textwrap

# Prepended to a `python -c` program: any import of torch (or a submodule) raises ImportError;
# h5py's optional torch-free path is untouched.
BLOCK_TORCH = textwrap.dedent(
    """
    import sys
    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
            return None
    sys.meta_path.insert(0, _NoTorch())
    """
)
