"""`import novagen.tvm`: the TVM backend's public names (they live in `novagen.backends.tvm`)."""

from novagen.backends.tvm import *  # noqa: F403
from novagen.backends.tvm import __all__  # noqa: F401
