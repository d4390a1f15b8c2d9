"""The house rules, read from the source (``ast``; nothing is imported or run).

- functions at most ``FUNCTION_LINES_MAX`` lines, classes at most ``CLASS_LINES_MAX``
  (lines of code: blank lines, comments and docstrings not counted, nor a
  function's signature);
- protobuf (``neoarray.proto``, ``*_pb2``) imported only at the wire: the transport,
  the servicers, the one conversion module, and the modules still named in
  ``PROTO_IMPORTERS_LEFT`` (a list that may only shrink);
- ``grpc.RpcError`` named (caught, tested, raised) only at the wire: ``neoarray.wire``
  and the transport, which turn it into the errors of ``neoarray.errors``, and the
  modules still named in ``GRPC_ERRORS_LEFT`` (a list that may only shrink);
- no import circle among the modules of the project (imports inside functions
  counted, ``if TYPE_CHECKING:`` blocks not), and in the packages kept as layers
  (``LAYERED``) no import of the project inside a function, where it would hide a
  circle, but for ``LAZY_IMPORTS``, each with its reason.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ("master", "storage_node", "neoarray", "simulation")
GENERATED = ("neoarray/proto/",)
PROJECT = {"master", "storage_node", "neoarray", "simulation"}

FUNCTION_LINES_MAX = 70
CLASS_LINES_MAX = 700
# functions still over the bound: each entry may only go (tidy it, then remove it here)
LONG_FUNCTIONS: set[str] = set()

# where protobuf belongs: the transport, the servicers, the state conversion
PROTO_AT_THE_WIRE = {
    "neoarray/transport/bulk.py", "neoarray/transport/client.py", "neoarray/transport/frames.py",
    "neoarray/transport/server.py", "neoarray/client/calls.py", "neoarray/admin_calls.py",
    "master/service.py", "master/standby.py", "master/calls.py", "storage_node/service.py", "storage_node/calls.py",
    "neoarray/proto_states.py", "neoarray/check_calls.py",
}
# modules that still build or read messages themselves; the list may only shrink
PROTO_IMPORTERS_LEFT: set[str] = set()

# where a raw grpc.RpcError may be named: the one module that maps status codes to the
# project's errors (wire.to_exception, call, result, events) and the transport that
# raises and catches its own (the framed data plane's FramedRpcError is one)
GRPC_ERRORS_AT_THE_WIRE = {
    "neoarray/wire.py", "neoarray/transport/client.py", "neoarray/transport/bulk.py",
    "neoarray/transport/inproc.py",
}
# modules that still handle raw grpc.RpcError themselves; the list may only shrink
GRPC_ERRORS_LEFT: set[str] = set()

# packages (folders, their own modules only) whose modules are layers: no project
# import inside a function
LAYERED = ("master/", "storage_node/", "neoarray/array/", "neoarray/jobs/", "neoarray/transport/",
           "neoarray/client/", "neoarray/dashboard/", "neoarray/importing/", "neoarray/ingest/",
           "neoarray/vm/", "neoarray/xarray/", "simulation/")
# packages not held to that yet; the list may only shrink (a package with no import
# inside a function left moves to LAYERED)
LAYERED_NOT_YET = ("neoarray/",)
LAZY_IMPORTS = {
    # Numba's start-up is paid by the first reduction, not by every storage node or client
    ("storage_node/reduce.py", "neoarray.kernels"),
    ("neoarray/client/reductions.py", "neoarray.kernels"),
    # Bokeh is optional: the dashboard's modules load when it is served, and its absence
    # becomes an error naming the extra to install
    *(("neoarray/dashboard/cli.py", f"neoarray.dashboard.{m}") for m in ("auth", "sources", "web")),
    # paho-mqtt is optional: loaded when an MQTT input is configured
    ("neoarray/ingest/service.py", "neoarray.ingest.mqtt"),
    # the `neoarray` command builds its parser from these modules at every call (--help
    # included): what a subcommand runs (ZODB, the client, numpy) loads when it runs
    *(("neoarray/importing/cli.py", m) for m in ("neoarray.client", "neoarray.ctl",
                                                  "neoarray.importing.run", "neoarray.importing.source")),
    *(("neoarray/ingest/service.py", m) for m in ("neoarray", "neoarray.client", "neoarray.ctl",
                                                   "neoarray.jobs.cli")),
    ("neoarray/ingest/committer.py", "neoarray.array"),
    ("neoarray/ingest/committer.py", "neoarray.array.overview"),
}


def _sources() -> dict[str, pathlib.Path]:
    out = {}
    for top in SOURCE:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith(GENERATED):
                out[rel] = path
    return out


SOURCES = _sources()
TREES = {rel: ast.parse(path.read_text(), rel) for rel, path in SOURCES.items()}


def _module_name(rel: str) -> str:
    parts = rel[:-3].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(rel): rel for rel in SOURCES}


# -- sizes --------------------------------------------------------------------------------
def _code_lines(source: str) -> set[int]:
    """Numbers of the lines that are neither blank nor only a comment."""
    return {i for i, line in enumerate(source.splitlines(), 1) if line.strip() and not line.lstrip().startswith("#")}


def _docstring_lines(node) -> set[int]:
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return set(range(first.lineno, first.end_lineno + 1))
    return set()


def _size(node, code: set[int]) -> int:
    """Code lines of ``node``: from its first statement (its signature not counted),
    docstrings, blank lines and comments not counted."""
    start = node.body[0].lineno
    docs = _docstring_lines(node)
    for inner in ast.walk(node):
        if inner is not node and isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            docs |= _docstring_lines(inner)
    return len((set(range(start, node.end_lineno + 1)) & code) - docs)


def _definitions():
    """``(rel, qualified name, node)`` for every function and class."""
    def walk(rel, node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                yield rel, name, child
                yield from walk(rel, child, name + ".")
            else:
                yield from walk(rel, child, prefix)
    for rel, tree in TREES.items():
        yield from walk(rel, tree, "")


def _sizes():
    code = {rel: _code_lines(path.read_text()) for rel, path in SOURCES.items()}
    return {f"{rel}:{name}": (node, _size(node, code[rel])) for rel, name, node in _definitions()}


SIZES = _sizes()


def test_functions_are_short():
    long = {key: size for key, (node, size) in SIZES.items()
            if not isinstance(node, ast.ClassDef) and size > FUNCTION_LINES_MAX}
    assert set(long) <= LONG_FUNCTIONS, (
        f"functions over {FUNCTION_LINES_MAX} lines of code: "
        f"{ {k: v for k, v in long.items() if k not in LONG_FUNCTIONS} }: split them")
    assert set(long) == LONG_FUNCTIONS, (
        f"{sorted(LONG_FUNCTIONS - set(long))} are short now (or gone): remove them from LONG_FUNCTIONS")


def test_classes_are_small():
    big = {key: size for key, (node, size) in SIZES.items()
           if isinstance(node, ast.ClassDef) and size > CLASS_LINES_MAX}
    assert not big, f"classes over {CLASS_LINES_MAX} lines of code: {big}: give parts to objects of their own"


# -- protobuf at the wire ---------------------------------------------------------------------
def _imported_modules(rel: str, tree, *, in_functions_only: bool = False):
    """``(module name, node, inside a function)`` for each import of ``rel``, relative
    imports resolved; ``if TYPE_CHECKING:`` blocks left out."""
    package = _module_name(rel).split(".")
    if not rel.endswith("__init__.py"):
        package = package[:-1]
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other, in_function)
                continue
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((alias.name, child, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = package[:len(package) - child.level + 1] if child.level else []
                module = ".".join(base + ([child.module] if child.module else []))
                for alias in child.names:
                    full = f"{module}.{alias.name}"
                    out.append((full if full in MODULES or full.endswith(("_pb2", "_pb2_grpc"))
                                else module, child, in_function))
            visit(child, inside)
    visit(tree, False)
    return out


def _imports_protobuf(name: str) -> bool:
    return name == "neoarray.proto" or name.startswith("neoarray.proto.") or name.rsplit(".", 1)[-1].endswith(
        ("_pb2", "_pb2_grpc"))


def test_protobuf_is_imported_only_at_the_wire():
    importers = {rel for rel, tree in TREES.items()
                 if any(_imports_protobuf(name) for name, _, _ in _imported_modules(rel, tree))
                 and not rel.startswith("neoarray/proto/")}
    stray = importers - PROTO_AT_THE_WIRE - PROTO_IMPORTERS_LEFT
    assert not stray, (f"{sorted(stray)} import protobuf: convert at the wire (neoarray/proto_states.py, "
                       f"the servicers, neoarray/transport/) and hand domain values inward")
    gone = PROTO_IMPORTERS_LEFT - importers
    assert not gone, f"{sorted(gone)} no longer import protobuf: remove them from PROTO_IMPORTERS_LEFT"


def _names_rpc_error(tree) -> bool:
    """``grpc.RpcError`` (or ``RpcError`` imported from grpc, or a subclass named
    ``...RpcError``) appears in the module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.endswith("RpcError"):
            return True
        if isinstance(node, ast.Name) and node.id.endswith("RpcError"):
            return True
        if isinstance(node, ast.ImportFrom) and any(a.name.endswith("RpcError") for a in node.names):
            return True
    return False


def test_raw_grpc_errors_are_handled_only_at_the_wire():
    """Callers see the errors of ``neoarray.errors``: the wire translates status codes
    (``wire.call``, ``wire.result``, ``wire.events``), nothing else catches gRPC's."""
    namers = {rel for rel, tree in TREES.items() if _names_rpc_error(tree)}
    stray = namers - GRPC_ERRORS_AT_THE_WIRE - GRPC_ERRORS_LEFT
    assert not stray, (f"{sorted(stray)} name grpc.RpcError: call through neoarray.wire (call, result, "
                       f"events) and catch the errors of neoarray.errors it raises")
    gone = GRPC_ERRORS_LEFT - namers
    assert not gone, f"{sorted(gone)} no longer name grpc.RpcError: remove them from GRPC_ERRORS_LEFT"


def test_the_rpc_error_check_sees_a_handler():
    """The check above sees the usual spellings of a handler of raw gRPC errors."""
    for source in ("try:\n    pass\nexcept grpc.RpcError:\n    pass\n",
                   "from grpc import RpcError\n",
                   "ok = isinstance(exc, grpc.RpcError)\n"):
        assert _names_rpc_error(ast.parse(source))
    assert not _names_rpc_error(ast.parse("try:\n    pass\nexcept ClusterUnavailable:\n    pass\n"))


def test_the_domain_states_are_spelled_once():
    """Cell, node and cluster states are ``neoarray.states`` members; their protobuf
    twins are mapped only in ``neoarray/proto_states.py``."""
    spellings = {"CELL_PB", "CLUSTER_PB", "NODE_PB", "TYPE_PB", "CELL_LETTERS", "CELL_STATES", "READABLE",
                 "NODE_STATES", "CLUSTER_NAMES", "NODE_PREFIX", "NODE_TYPES", "READABLE_PB"}
    defined = sorted(f"{rel}:{target.id}" for rel, tree in TREES.items()
                     if rel not in ("neoarray/states.py", "neoarray/proto_states.py")
                     for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                     for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                     if isinstance(target, ast.Name) and target.id in spellings)
    assert not defined, f"states spelled again outside neoarray/states.py and neoarray/proto_states.py: {defined}"


# -- import circles ------------------------------------------------------------------------------
def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for rel, tree in TREES.items():
        me = _module_name(rel)
        edges = set()
        for name, _, _ in _imported_modules(rel, tree):
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            # a module's own packages are always imported before it: not an arrow
            if name and name != me and not me.startswith(name + "."):
                edges.add(name)
        graph[me] = edges
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_no_import_circles():
    assert _circles(_graph()) == []


def _package(rel: str) -> str:
    return rel.rpartition("/")[0] + "/"


def _imports_in_functions(package: str) -> set[tuple[str, str]]:
    return {(rel, name) for rel, tree in TREES.items() if _package(rel) == package
            for name, _, in_function in _imported_modules(rel, tree)
            if in_function and name.split(".")[0] in PROJECT}


@pytest.mark.parametrize("package", LAYERED)
def test_layers_import_the_project_at_the_top(package):
    """An import inside a function hides a circle from the test above (and from
    readers); the layered packages import the project at module level only."""
    found = _imports_in_functions(package)
    assert found <= LAZY_IMPORTS, f"imports inside functions: {sorted(found - LAZY_IMPORTS)}: move them to the top"


def test_every_package_is_layered_or_named_as_not_yet():
    packages = {_package(rel) for rel in SOURCES} - {"neoarray/proto/"}
    assert packages == set(LAYERED) | set(LAYERED_NOT_YET), "a package is missing from LAYERED or LAYERED_NOT_YET"
    clean = [p for p in LAYERED_NOT_YET if not _imports_in_functions(p) - LAZY_IMPORTS]
    assert not clean, f"{clean} import the project at the top only now: move them to LAYERED"


def test_the_circle_finder_finds_a_circle():
    """The check above can fail: a made-up graph with a circle is caught."""
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
