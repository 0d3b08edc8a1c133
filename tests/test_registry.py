"""The generic Registry, the kind lookup, the legacy wrappers and the listing commands."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from protobench.backbones import list_backbones, register_backbone
from protobench.cli import app
from protobench.errors import RegistryError, UserError
from protobench.geometry.metrics import list_metrics
from protobench.methods import get_method_class, list_methods, register_method
from protobench.methods.presets import list_presets
from protobench.methods.protocols import FewShotMethod
from protobench.ood.scores import list_scores
from protobench.registry import KINDS, Registry, matches, parameters, registry

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


class Widget:
    """A widget.

    Longer text that is not part of the summary."""

    def __init__(self, size: int, colour: str = "red", *args, **kwargs) -> None:
        self.size, self.colour = size, colour


class Gadget(Widget):
    pass


@pytest.fixture
def widgets() -> Registry[type]:
    reg: Registry[type] = Registry("widget")
    reg.register("widget")(Widget)  # decorator form
    reg.register("gadget", Gadget)  # call form
    return reg


# --- Registry ------------------------------------------------------------------------------


def test_register_as_decorator_or_call_and_list_sorted(widgets) -> None:
    assert widgets.names() == ["gadget", "widget"] == list(widgets)
    assert widgets.list() == [Gadget, Widget] and len(widgets) == 2
    assert widgets.items() == [("gadget", Gadget), ("widget", Widget)]
    assert widgets.get("widget") is Widget and "gadget" in widgets and "nope" not in widgets

    @widgets.register("thing")
    def thing() -> None: ...

    assert thing is widgets.get("thing") and thing.__name__ == "thing"  # returned unchanged


def test_duplicate_names_are_refused_and_the_first_kept(widgets) -> None:
    with pytest.raises(ValueError, match="widget 'widget' is already registered"):
        widgets.register("widget", Gadget)
    assert widgets.get("widget") is Widget
    with pytest.raises(ValueError, match="non-empty string name"):
        widgets.register("", Gadget)


def test_a_failing_registration_hook_leaves_the_registry_unchanged() -> None:
    def refuse_small(name: str, obj: int) -> None:
        if obj < 10:
            raise TypeError(f"{name} is too small")

    reg: Registry[int] = Registry("number", on_register=refuse_small)
    reg.register("ten", 10)
    with pytest.raises(TypeError, match="three is too small"):
        reg.register("three", 3)
    assert reg.names() == ["ten"]


def test_unknown_names_list_the_valid_ones_and_close_matches(widgets) -> None:
    with pytest.raises(RegistryError) as err:
        widgets.get("widgte")
    msg = str(err.value)
    assert msg.startswith("unknown widget 'widgte'; choose one of: gadget, widget")
    assert msg.endswith("did you mean 'widget'?")
    assert isinstance(err.value, UserError)  # the CLI prints it and exits 2
    with pytest.raises(RegistryError) as far:
        widgets.get("zzzzzz")
    assert "did you mean" not in str(far.value)
    assert "choose one of: gadget, widget" in str(far.value)
    assert widgets.close_matches("WIDGET")[0] == "widget"  # best first, any case


@pytest.mark.parametrize("pattern, expected", [
    (None, ["proto-clip", "protonet", "ncm"]),
    ("*proto*", ["proto-clip", "protonet"]),
    ("proto", ["proto-clip", "protonet"]),  # no wildcard: a substring
    ("PROTO*", ["proto-clip", "protonet"]),  # case-insensitive
    ("proto???", ["protonet"]),
    ("[n]*", ["ncm"]),
    ("protonet", ["protonet"]),
    ("*xyz*", []),
])
def test_fnmatch_patterns(pattern, expected) -> None:
    names = ["proto-clip", "protonet", "ncm"]
    assert [n for n in names if matches(n, pattern)] == expected
    reg: Registry[int] = Registry("n")
    for i, n in enumerate(names):
        reg.register(n, i)
    assert reg.names(pattern) == sorted(expected)
    assert reg.list(pattern) == [names.index(n) for n in sorted(expected)]


def test_describe_gives_summary_and_constructor_parameters(widgets) -> None:
    d = widgets.describe("widget")
    assert d == {"kind": "widget", "name": "widget", "summary": "A widget.",
                 "parameters": [{"name": "size", "type": "int"},
                                {"name": "colour", "type": "str", "default": "red"}]}
    assert widgets.describe("gadget")["summary"] == ""  # docstrings are not inherited

    def f(x, y: float = 0.5):
        """``f``: adds."""

    assert parameters(f, skip=("x",)) == [{"name": "y", "type": "float", "default": 0.5}]
    reg: Registry = Registry("fn", describer=lambda name, fn: {"extra": name.upper()})
    reg.register("f", f)
    assert reg.describe("f")["summary"] == "f: adds." and reg.describe("f")["extra"] == "F"


# --- the five registries -------------------------------------------------------------------


def test_kind_lookup_returns_the_filled_registries() -> None:
    assert set(KINDS) == {"methods", "datasets", "scores", "metrics", "backbones"}
    assert registry("methods").list() == list_methods()
    assert registry("scores").list() == list_scores()
    assert registry("metrics").names() == list_metrics()
    assert registry("backbones").names() == list_backbones()
    from protobench.datasets import list_datasets

    assert registry("datasets").list() == list_datasets()
    assert registry("method") is registry("methods")  # singular accepted
    assert {"protonet", "ncm", "palm"} <= set(registry("methods").names())
    assert {"digits", "omniglot"} <= set(registry("datasets").names())
    with pytest.raises(RegistryError, match="unknown kind 'widgets'; choose one of: backbones, "
                                            "datasets, methods, metrics, scores"):
        registry("widgets")


def test_each_lookup_imports_the_modules_that_fill_its_registry() -> None:
    """In a fresh interpreter, ``registry(kind)`` alone (lightest kinds first, methods last
    since they import everything) returns the registry as full as in this session."""
    order = ["backbones", "metrics", "scores", "datasets", "methods"]
    code = ("from protobench.registry import registry; "
            f"print(*[len(registry(k)) for k in {order!r}])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(len(registry(k))) for k in order], out.stderr


def test_registry_module_imports_only_errors_and_the_stdlib() -> None:
    path = Path(__file__).resolve().parents[1] / "protobench" / "registry.py"
    tree = ast.parse(path.read_text())
    modules = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert {m for m in modules if m.startswith("protobench")} == {"protobench.errors"}
    assert all(m.split(".")[0] in sys.stdlib_module_names or m.startswith("protobench")
               or m == "__future__" for m in modules), modules
    out = subprocess.run([sys.executable, "-c", "import sys, protobench.registry; print(sorted("
                          "m for m in sys.modules if m.startswith('protobench')))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['protobench', 'protobench.errors', 'protobench.registry']"


def test_wrappers_refuse_duplicates_and_check_capabilities() -> None:
    with pytest.raises(ValueError, match="backbone 'mlp' is already registered"):
        register_backbone("mlp")(lambda in_shape: None)
    with pytest.raises(ValueError, match="method 'protonet' is already registered"):
        register_method("protonet")(type("Other", (FewShotMethod,), {}))

    class NoTasks(FewShotMethod):
        tasks = frozenset()

        def features(self, data, device): ...

    with pytest.raises(TypeError, match="declares tasks"):
        register_method("contract-no-tasks")(NoTasks)
    assert "contract-no-tasks" not in registry("methods")
    with pytest.raises(RegistryError, match="did you mean 'protonet'"):
        get_method_class("protonte")


def test_method_description_has_capabilities_and_presets() -> None:
    d = registry("methods").describe("protonet")
    cls = get_method_class("protonet")
    assert d["capabilities"] == cls.capabilities() and d["job_options"] == list(cls.job_options)
    assert set(d["presets"]) == set(list_presets("protonet")) and "digits" in d["presets"]
    assert d["presets"]["digits"]["params"] == list_presets("protonet")["digits"].params
    params = {p["name"]: p.get("default") for p in d["parameters"]}
    assert params["backbone"] == "conv4" and params["train_steps"] == 1000


# --- CLI -----------------------------------------------------------------------------------


def test_list_methods_with_a_pattern() -> None:
    res = run("list", "methods", "*proto*")
    assert res.exit_code == 0, res.output
    for name in ("proto-clip", "proto-clip-f", "protonet"):
        assert name in res.output
    assert "ncm" not in res.output and "palm" not in res.output
    assert "distances" in res.output and "trains" in res.output


@pytest.mark.parametrize("kind, header", [("methods", "tasks"), ("datasets", "splits"),
                                          ("scores", "needs"), ("metrics", "fast ranker"),
                                          ("backbones", "options")])
def test_list_every_kind_shows_every_name(kind, header) -> None:
    res = run("list", kind)
    assert res.exit_code == 0, res.output
    assert header in res.output
    for name in registry(kind).names():
        assert name in res.output, name


def test_list_shows_summaries_verbatim() -> None:
    res = run("list", "backbones", "conv4")
    assert res.exit_code == 0 and "[conv3x3" in res.output  # not swallowed as rich markup
    assert "mlp" not in res.output


def test_list_unknown_kind_or_no_match_exits_2() -> None:
    res = run("list", "models")
    assert res.exit_code == 2
    assert "unknown kind 'models'; choose one of: backbones, datasets, methods, metrics, " \
           "scores" in res.output
    assert "Traceback" not in res.output
    none = run("list", "scores", "*zzz*")
    assert none.exit_code == 2 and "no score matches '*zzz*'" in none.output


def test_methods_table_and_one_method() -> None:
    table = run("methods")
    assert table.exit_code == 0, table.output
    for col in ("name", "tasks", "distances", "trains", "presets", "summary"):
        assert col in table.output
    for name in registry("methods").names():
        assert name in table.output
    one = run("methods", "protonet")
    assert one.exit_code == 0, one.output
    out = one.output
    assert "protonet: Prototypical Networks" in out
    assert "train_steps" in out and "1000" in out and "'conv4'" in out  # parameters, defaults
    assert "scores_episodes" in out and "sqeuclidean, euclidean, cosine, geodesic" in out
    assert "--train-steps" in out  # job options with their flags
    assert "omniglot-paper" in out and "(v2)" in out  # presets and their versions
    ncm = run("methods", "ncm")
    assert ncm.exit_code == 0 and "ncm has no presets" in ncm.output


def test_methods_unknown_name_exits_2_with_close_matches() -> None:
    res = run("methods", "protonte")
    assert res.exit_code == 2
    assert "unknown method 'protonte'" in res.output and "did you mean 'protonet'" in res.output


def test_datasets_and_presets_listings() -> None:
    res = run("datasets", "omni*")
    assert res.exit_code == 0 and "omniglot-runs" in res.output and "digits" not in res.output
    assert "needed" in res.output
    pre = run("presets", "protonet")
    assert pre.exit_code == 0 and "omniglot-paper" in pre.output and "train_ways=60" in pre.output


def test_a_method_that_declares_scores_episodes_must_define_it() -> None:
    import torch

    from protobench.methods import FewShotMethod, register_method

    class Half(FewShotMethod):
        scores_episodes = True
        distances = ()

        def features(self, data, device) -> torch.Tensor:  # pragma: no cover
            return torch.zeros(0)

    with pytest.raises(TypeError, match="defines no score_episodes"):
        register_method("pb-test-half-scorer")(Half)
    assert "pb-test-half-scorer" not in registry("methods")
