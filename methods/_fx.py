"""torch.fx helpers shared by plugins that read or mask a layer's output after its BN chain.

Map-EX needs each unit member's post-ReLU map, and the RL agent masks channels right after the
member's BN; both walk the single-user chain of nodes that follows a conv/linear call.
"""
from __future__ import annotations

import operator
from typing import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

RELU_FUNCS = (F.relu, torch.relu, torch.relu_)
ADD_FUNCS = (operator.add, operator.iadd, torch.add)
PASS_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity, nn.Dropout)


def layer_call(gm: fx.GraphModule, layer: str) -> fx.Node:
    """The one node that calls module `layer` (a layer called twice has no single output map)."""
    calls = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == layer]
    if len(calls) != 1:
        raise ValueError(f"layer '{layer}' is called {len(calls)} times in the traced model; need exactly once")
    return calls[0]


def sole_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def follow(node: fx.Node, step: Callable[[fx.Node], bool]) -> fx.Node:
    """Walk the chain of single users from `node` while `step(next)` holds; the last node reached."""
    while (nxt := sole_user(node)) is not None and step(nxt):
        node = nxt
    return node


def is_module(node: fx.Node, gm: fx.GraphModule, kinds: tuple[type, ...]) -> bool:
    return node.op == "call_module" and isinstance(gm.get_submodule(node.target), kinds)


def is_bn(node: fx.Node, gm: fx.GraphModule) -> bool:
    return is_module(node, gm, (nn.modules.batchnorm._BatchNorm,))


def is_relu(node: fx.Node, gm: fx.GraphModule) -> bool:
    if node.op == "call_module":
        return is_module(node, gm, (nn.ReLU,))
    return (node.op == "call_function" and node.target in RELU_FUNCS) or \
        (node.op == "call_method" and node.target in ("relu", "relu_"))


def keeps_channels(node: fx.Node, gm: fx.GraphModule) -> bool:
    """Ops between a conv and its ReLU that keep the channels: BN, identity, dropout, residual add."""
    if node.op == "call_module":
        return is_module(node, gm, PASS_MODULES)
    return (node.op == "call_function" and node.target in ADD_FUNCS) or \
        (node.op == "call_method" and node.target in ("add", "add_"))


def bn_chain_end(gm: fx.GraphModule, layer: str) -> fx.Node:
    """The last node of `layer`'s conv/linear -> BN chain (the layer itself when no BN follows)."""
    return follow(layer_call(gm, layer), lambda n: is_bn(n, gm))


def activation_node(gm: fx.GraphModule, layer: str) -> tuple[fx.Node, bool]:
    """The node whose output is `layer`'s post-ReLU map, and whether a ReLU was found
    (False: the caller applies relu to the returned conv/BN output)."""
    node = follow(layer_call(gm, layer), lambda n: keeps_channels(n, gm) and not is_relu(n, gm))
    nxt = sole_user(node)
    if nxt is not None and is_relu(nxt, gm):
        return nxt, True
    return node, False
