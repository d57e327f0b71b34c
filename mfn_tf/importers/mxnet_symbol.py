"""MXNet symbol graphs (`PREFIX-symbol.json`) read without MXNet.

The JSON contains `nodes` in topological order. A node has `op` ("null" for
variables: the input and every weight), `name`, attributes and `inputs`,
each input an entry `[node_index, output_index, version]`. MXNet 1.x
writes the attributes under "attrs"; 0.x files used "param" and "attr".
"""

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

# Ops that return their data input unchanged at inference time, so that a
# graph walk can look through them. Dropout only acts while training.
PASS_THROUGH_OPS = frozenset(
    {"_copy", "identity", "Dropout", "BlockGrad", "stop_gradient", "Flatten", "flatten"}
)


class SymbolError(ValueError):
    """A symbol file that cannot be read as an MXNet graph."""


@dataclass
class SymbolNode:
    index: int
    op: str
    name: str
    attrs: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)  # node indices of the inputs

    @property
    def is_variable(self):
        return self.op == "null"

    def describe(self):
        return f"node {self.name!r} ({self.op}, #{self.index})"


def parse_bool(value):
    """Parse an MXNet boolean attribute ("True", "1", "false", ...)."""
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(f"not a boolean attribute value: {value!r}")


def parse_tuple(value):
    """Parse an MXNet tuple attribute such as "(3, 3)" or "[1,1]"."""
    parsed = ast.literal_eval(str(value))
    if isinstance(parsed, (int, float)):
        return (int(parsed),)
    return tuple(int(item) for item in parsed)


class MXNetSymbol:
    """The nodes of an MXNet symbol JSON, with helpers for graph walks."""

    def __init__(self, nodes, heads, path="<symbol>", version=None):
        self.nodes = nodes
        self.heads = heads
        self.path = path
        self.version = version

    @classmethod
    def load(cls, path):
        """Read `PREFIX-symbol.json`.

        Raises:
            FileNotFoundError: `path` does not exist.
            SymbolError: the file is not an MXNet symbol JSON.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"MXNet symbol file not found: {path}")
        try:
            graph = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SymbolError(f"{path}: not a JSON file: {error}") from error
        if not isinstance(graph, dict) or "nodes" not in graph or "heads" not in graph:
            raise SymbolError(
                f"{path}: no 'nodes' and 'heads' keys, so this is not an MXNet "
                "symbol JSON (written by `sym.save` or `mx.model.save_checkpoint`)."
            )
        nodes = []
        for index, raw in enumerate(graph["nodes"]):
            try:
                attrs = dict(raw.get("attrs") or raw.get("attr") or raw.get("param") or {})
                inputs = [int(entry[0]) for entry in raw.get("inputs", [])]
                node = SymbolNode(index, raw["op"], raw["name"], attrs, inputs)
            except (KeyError, TypeError, ValueError, IndexError) as error:
                raise SymbolError(f"{path}: node #{index} is malformed: {error!r}") from error
            if any(not 0 <= source < index for source in inputs):
                raise SymbolError(
                    f"{path}: {node.describe()} has an input that is not an "
                    "earlier node; the nodes are not in topological order."
                )
            nodes.append(node)
        heads = [int(entry[0]) for entry in graph["heads"]]
        version = graph.get("attrs", {}).get("mxnet_version", [None, None])[1]
        return cls(nodes, heads, path=path, version=version)

    def find_variable(self, name):
        for node in self.nodes:
            if node.is_variable and node.name == name:
                return node
        return None

    def resolve(self, index):
        """Follow pass-through ops back to the node whose output they carry."""
        node = self.nodes[index]
        while node.op in PASS_THROUGH_OPS:
            node = self.nodes[node.inputs[0]]
        return node

    def data_input(self, node):
        """Return the node that feeds `node`'s data input, skipping pass-throughs."""
        return self.resolve(node.inputs[0])

    def descendants(self, index):
        """Return the indices of all nodes that depend on node `index`, itself included."""
        reached = {index}
        for node in self.nodes[index + 1 :]:
            if any(source in reached for source in node.inputs):
                reached.add(node.index)
        return reached

    def weight_name(self, node, position):
        """Return the name of the variable at input `position` of `node`, or None."""
        if position >= len(node.inputs):
            return None
        source = self.nodes[node.inputs[position]]
        return source.name if source.is_variable else None
