"""``stageflow graph``: draw a pipeline, offline, from its file and the installed plugins.

:func:`build_graph` reduces a :class:`~stageflow.pipeline.Pipeline` to a :class:`Graph`
once (:mod:`stageflow.graph.model`); one module per format family draws it: ``text``,
``dot`` (also ``svg`` and ``png`` through Graphviz), ``mermaid``, ``html`` and ``json``.
:func:`render` picks the renderer by format name.
"""

from stageflow.graph.dot import GraphvizError
from stageflow.graph.json import FORMAT_VERSION
from stageflow.graph.model import Edge, Graph, ModelRef, Problem, StageNode, build_graph
from stageflow.graph.render import FORMATS, Format, render

__all__ = [
    "FORMATS",
    "FORMAT_VERSION",
    "Edge",
    "Format",
    "Graph",
    "GraphvizError",
    "ModelRef",
    "Problem",
    "StageNode",
    "build_graph",
    "render",
]
