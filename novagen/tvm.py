"""`import novagen.tvm`: the TVM backend's public names (they live in `novagen.backends.tvm`); importing it
registers novagen's MetaSchedule schedule rule, so TVM's own tuning flow finds it."""

from novagen.backends.tvm import *  # noqa: F403
from novagen.backends.tvm import __all__  # noqa: F401
from novagen.backends.tvm.schedule import register_rules

register_rules()
