"""A user's model and data from files, for `novagen calibrate` and `novagen finetune`.

A model is an exported program (`torch.export.save`, .pt2) or a whole pickled module (`torch.save(model)`,
.pt/.pth).  An exported program calls `aten.conv2d` as a function on parameters, so its convolutions are
turned back into `nn.Conv2d` modules (sharing the parameters) that `replace_conv2d` can swap; the graph's
BatchNorm and dropout keep the mode they were exported in.  Data is an .npz with `x` (N, C, H, W) and,
for accuracy and fine-tuning, integer labels `y` (N,).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from novagen.errors import InputError
from novagen.torch.replace import set_submodule

MODEL_SUFFIXES = (".pt2", ".pt", ".pth")


def _arg(node: Any, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def conv_modules(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Every `aten.conv2d` call on the graph's own weight and bias turned into a call of an `nn.Conv2d`
    submodule at the weight's module path (its parameters shared), and the export-time shape guards dropped
    (a graph traced for one batch size still fails where it baked that size in); returns `gm`, changed."""
    conv2d = torch.ops.aten.conv2d.default
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn" and not node.users:
            gm.graph.erase_node(node)  # export-time shape guards: calibration and training use other batches
            continue
        if node.op != "call_function" or node.target is not conv2d:
            continue
        w_node, b_node = node.args[1], _arg(node, 2, "bias", None)
        if getattr(w_node, "op", None) != "get_attr" or (b_node is not None and b_node.op != "get_attr"):
            continue
        path = w_node.target.rpartition(".")[0]
        if not path or w_node.target != f"{path}.weight":
            continue
        weight = gm.get_parameter(w_node.target)
        bias = gm.get_parameter(b_node.target) if b_node is not None else None
        k, cin_g, kh, kw = weight.shape
        groups = int(_arg(node, 6, "groups", 1))
        conv = nn.Conv2d(cin_g * groups, k, (kh, kw), stride=tuple(_arg(node, 3, "stride", [1, 1])),
                         padding=tuple(_arg(node, 4, "padding", [0, 0])),
                         dilation=tuple(_arg(node, 5, "dilation", [1, 1])), groups=groups, bias=bias is not None)
        conv.weight = weight
        if bias is not None:
            conv.bias = bias
        set_submodule(gm, path, conv)
        with gm.graph.inserting_before(node):
            call = gm.graph.call_module(path, (node.args[0],))
        node.replace_all_uses_with(call)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def load_model(path: str | Path) -> nn.Module:
    """The model in `path` (see the module docstring), its convolutions as `nn.Conv2d`; a pickled module is
    put in eval mode."""
    path = Path(path)
    if path.suffix not in MODEL_SUFFIXES:
        raise InputError(f"{path}: give an exported program (.pt2, torch.export.save) or a pickled module (.pt)")
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    try:
        if path.suffix == ".pt2":
            model: Any = conv_modules(torch.export.load(str(path)).module())
        else:
            model = torch.load(str(path), map_location="cpu", weights_only=False)
    except InputError:
        raise
    except Exception as exc:  # torch raises many kinds on a damaged or foreign file
        raise InputError(f"{path} could not be loaded as a model: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"{path} holds a {type(model).__name__}, not a model (a state dict has no architecture: "
                         "save the model with torch.export.save or torch.save(model))")
    if path.suffix != ".pt2":  # an exported program's graph keeps its export-time mode (eval() is refused)
        model.eval()
    return model


def load_data(path: str | Path, labels: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, y) from an .npz (`x` float (N, C, H, W), `y` integer labels); y None when absent and not needed."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as doc:
            arrays = {k: doc[k] for k in doc.files}
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not an .npz file: {exc}") from None
    if "x" not in arrays:
        raise InputError(f"{path} has no array 'x' (inputs N, C, H, W); it holds {', '.join(arrays) or 'nothing'}")
    x = arrays["x"]
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating) or len(x) == 0:
        raise InputError(f"{path}: x must be a non-empty float array (N, C, H, W), got {x.dtype} {x.shape}")
    y = arrays.get("y")
    if y is None and labels:
        raise InputError(f"{path} has no labels 'y' (N,), which fine-tuning needs")
    if y is not None and (y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer)):
        raise InputError(f"{path}: y must be {len(x)} integer labels, got {y.dtype} {y.shape}")
    return torch.from_numpy(x.astype(np.float32)), None if y is None else torch.from_numpy(y.astype(np.int64))


def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    """Top-1 accuracy in percent of `model` on (x, y)."""
    right = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            right += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return 100.0 * right / len(y)
