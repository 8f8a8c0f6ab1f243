"""The documentation: the Sphinx build (which executes the tutorials) and the docstrings.

``test_docs_build`` runs the documented build command,
``sphinx-build -W --keep-going -b html docs <dir>``, with ``TRVAE_TUTORIAL_EPOCHS`` set to a
small value, so that every tutorial is executed quickly; any Sphinx warning or failing notebook
cell fails it. It needs the ``docs`` extra (``pip install -e ".[docs]"``) and is skipped without.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import trvae_scvi
from trvae_scvi import benchmarking, datasets, metrics, nn, pl
from trvae_scvi.model import ConditionBalancedDataSplitter

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIALS = sorted((ROOT / "tutorials").glob("*.ipynb"))
EPOCHS_VARIABLE = "TRVAE_TUTORIAL_EPOCHS"
TEST_EPOCHS = "2"
DOCS_MODULES = ("sphinx", "myst_nb", "sphinx_book_theme", "sphinxcontrib.bibtex")


def public_api() -> dict[str, object]:
    """Every public class, function, method and property of the package, by qualified name.

    The names are those the API page documents them under (its HTML anchors).
    """
    api: dict[str, object] = {}
    classes = {
        "trvae_scvi.TRVAE": trvae_scvi.TRVAE,
        "trvae_scvi.TRVAEModule": trvae_scvi.TRVAEModule,
        "trvae_scvi.model.ConditionBalancedDataSplitter": ConditionBalancedDataSplitter,
        "trvae_scvi.nn.ConditionalMLP": nn.ConditionalMLP,
        "trvae_scvi.benchmarking.HoldOut": benchmarking.HoldOut,
    }
    for name, cls in classes.items():
        api[name] = cls
        # Members defined in this package (the class and its mixins), not scvi-tools' ones.
        for klass in cls.__mro__:
            if not klass.__module__.startswith("trvae_scvi"):
                continue
            for attribute, value in vars(klass).items():
                if attribute.startswith("_") or f"{name}.{attribute}" in api:
                    continue
                if isinstance(value, classmethod | staticmethod):
                    value = value.__func__
                if inspect.isfunction(value) or isinstance(value, property):
                    api[f"{name}.{attribute}"] = value
    for module in (metrics, pl, benchmarking, datasets):
        for attribute, value in vars(module).items():
            if (
                not attribute.startswith("_")
                and inspect.isfunction(value)
                and value.__module__.startswith(module.__name__)
            ):
                api[f"{value.__module__.split('._')[0]}.{attribute}"] = value
    for attribute in nn.__all__:
        value = getattr(nn, attribute)
        if inspect.isfunction(value):
            api[f"trvae_scvi.nn.{attribute}"] = value
    return api


def docstring_problems(obj) -> list[str]:
    """What a public object's docstring lacks: numpy sections, an example, typed signature."""
    function = obj.fget if isinstance(obj, property) else obj
    doc = inspect.getdoc(function) or ""
    if not doc:
        return ["no docstring"]
    problems = []
    if not isinstance(obj, property) and not re.search(r"^Examples\n-{8}$", doc, re.M):
        problems.append("no Examples section")
    if inspect.isfunction(function):
        signature = inspect.signature(function)
        parameters = [
            p
            for p in list(signature.parameters.values())[
                1 if "." in function.__qualname__ else 0 :
            ]
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        untyped = [p.name for p in parameters if p.annotation is inspect.Parameter.empty]
        if untyped:
            problems.append(f"parameters without a type annotation: {untyped}")
        if signature.return_annotation is inspect.Signature.empty and function.__name__ != (
            "__init__"
        ):
            problems.append("no return type annotation")
        if parameters and not re.search(r"^Parameters\n-{10}$", doc, re.M):
            problems.append("no Parameters section")
        returns = re.search(r"^Returns\n-{7}\n(.*)\n(.*)", doc, re.M)
        if returns and (returns.group(1).startswith(" ") or not returns.group(2).startswith(" ")):
            problems.append(
                "Returns section not in numpy form (a line with the type, then the description "
                "indented below it)"
            )
    return problems


def test_public_api_docstrings():
    """Every public object has a numpy-style docstring with an example; types in signatures."""
    problems = {name: docstring_problems(obj) for name, obj in public_api().items()}
    problems = {name: found for name, found in problems.items() if found}
    assert not problems, "\n".join(f"{name}: {'; '.join(p)}" for name, p in problems.items())


def test_tutorials_are_committed_without_outputs_and_read_the_epochs():
    assert TUTORIALS, "no notebooks under tutorials/"
    for path in TUTORIALS:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
        with_output = [i for i, c in enumerate(code) if c["outputs"] or c["execution_count"]]
        assert not with_output, f"{path.name}: clear the outputs of code cells {with_output}"
        source = "".join("".join(cell["source"]) for cell in code)
        assert EPOCHS_VARIABLE in source, f"{path.name} does not read {EPOCHS_VARIABLE}"
        assert "model.train(max_epochs=max_epochs)" in source, path.name


def test_tutorials_are_in_the_docs():
    assert (DOCS / "tutorials").resolve() == (ROOT / "tutorials").resolve()
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for path in TUTORIALS:
        assert f"tutorials/{path.stem}" in index, f"{path.name} is not in the docs' toctree"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package (sphinxcontrib)
        return False


@pytest.mark.shared_data  # the several-conditions tutorial reads it
def test_docs_build(tmp_path):
    """The documented build command, warnings as errors, tutorials executed with few epochs."""
    missing = [m for m in DOCS_MODULES if not _installed(m)]
    if missing:
        pytest.skip(f"needs the docs extra (pip install -e '.[docs]'); missing {missing}")
    html = tmp_path / "html"
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", DOCS, html]
    result = subprocess.run(
        [str(part) for part in command],
        cwd=ROOT,
        env={**os.environ, EPOCHS_VARIABLE: TEST_EPOCHS},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, (
        f"sphinx-build failed ({result.returncode}):\n{result.stderr[-20000:]}\n"
        f"{result.stdout[-3000:]}"
    )

    # Every tutorial page holds the outputs of this build's execution, and its figures.
    for path in TUTORIALS:
        page = (html / "tutorials" / f"{path.stem}.html").read_text(encoding="utf-8")
        assert "cell_output" in page, f"{path.name}: no executed output on its page"
        source = path.read_text(encoding="utf-8")
        if "plt." in source or "sc.pl." in source:
            assert "<img" in page, f"{path.name}: plots, but its page has no figure"

    # The benchmark page includes the results files as they are.
    page = (html / "benchmarks.html").read_text(encoding="utf-8")
    results = ROOT / "benchmarks" / "results"
    for figure in [*results.glob("holdout_*.png"), results / "images.png"]:
        assert (html / "_images" / figure.name).is_file(), f"{figure.name} not in the docs"
    for table in ("holdout.md", "tuning/tune_defaults.md", "cross_donor.md", "images.md"):
        first_row = next(
            line
            for line in (results / table).read_text().splitlines()
            if line.startswith("| ") and "---" not in line
        )
        for cell in first_row.strip("|").split("|")[:2]:
            assert cell.strip() in page, f"{cell.strip()!r} of {table} not on the page"

    # The API page documents every public object.
    page = (html / "api.html").read_text(encoding="utf-8")
    undocumented = [name for name in public_api() if f'id="{name}"' not in page]
    assert not undocumented, f"not on the API page: {undocumented}"
