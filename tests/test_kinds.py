"""Kinds: one module per kind is the only place a kind is named, and a third kind is one new
module plus a template (a fake one, registered here, goes through the same machinery)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from blackfish_jobs import kinds
from blackfish_jobs.backends.base import Submitted
from blackfish_jobs.backends.local import LocalBackend
from blackfish_jobs.errors import BadInput
from blackfish_jobs.kinds import Argument, Kind, Option
from blackfish_jobs.specs import AlreadyPresent

PACKAGE = Path(kinds.__file__).resolve().parent.parent


# ------------------------------------------------------------------ a third kind, as a site would add it


@dataclass(frozen=True)
class FetchFile:
    """The fake kind's node request (what submitit would pickle)."""

    url: str
    dest_dir: Path
    force: bool = False

    @property
    def target(self) -> Path:
        return self.dest_dir / self.url.rsplit("/", 1)[-1]


def fetch_file(request: FetchFile) -> dict[str, Any]:
    """The fake kind's node task (never run here: the backend is replaced)."""
    raise AssertionError("not run in these tests")


class FetchFileKind(Kind):
    name = "fetch-file"
    artefact = "file"
    help = "Fetch URL into <home_dir>/files."
    argument = Argument("url", "URL", "URL")
    options = (
        Option(("--force",), "force", "Fetch again even if the file is there.", is_flag=True),
        Option(("--mirror",), "mirror", "Which mirror.", choice=("eu", "us"), default="eu", show_default=True),
    )
    slurm_defaults = {"time": "00:10:00", "mem": "1G", "cpus_per_task": 1}
    task_path = f"{__name__}:fetch_file"

    def build(self, entry, profile, settings, params, *, from_file):
        if not entry.startswith("https://"):
            raise BadInput(f"URL: expected https://, got {entry!r}")
        task = FetchFile(entry, profile.home_dir / "files", bool(params.get("force")))
        return self.spec(profile, settings, task, f"{entry} ({params.get('mirror')}) -> {task.target}")

    def present(self, spec):
        return AlreadyPresent(self.name, spec.target, spec.profile.name) if spec.target.exists() else None


TEMPLATE = """{% extends "base.sh.j2" %}
{% block environment %}
export FETCH_URL={{ request.url }}
{% endblock %}
"""


@pytest.fixture
def fetch_kind(local_site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kind]:
    """The fake kind registered, its template in a site templates directory."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "fetch-file.sh.j2").write_text(TEMPLATE)
    monkeypatch.setenv("BFJOBS_TEMPLATES_DIR", str(templates))
    kind = kinds.register(FetchFileKind())
    try:
        yield kind
    finally:
        del kinds.KINDS[kind.name]


def test_a_registered_kind_renders_through_the_same_machinery(cli, fetch_kind, local_site):
    result = cli("render", "fetch-file", "https://example.org/data.bin", "--mirror", "us")
    assert result.exit_code == 0, result.output
    script = result.stdout
    assert script.startswith("#!/bin/bash\n")
    assert "export FETCH_URL=https://example.org/data.bin" in script
    assert "export BFJOBS_KIND=fetch-file" in script
    assert "#SBATCH --time=00:10:00" in script and "#SBATCH --mem=1G" in script  # the kind's defaults
    assert f"{local_site.app_dir.resolve()}/files/data.bin" in script
    assert "#SBATCH --job-name=bfjobs-fetch-file-data.bin" in script


def test_a_registered_kind_has_its_commands_options_and_settings(cli, fetch_kind, local_site):
    listed = cli("submit", "--help").stdout
    assert "fetch-file" in listed and "pull-image" in listed
    helped = cli("submit", "fetch-file", "--help").stdout
    assert "submit fetch-file [OPTIONS] [URL]" in helped
    assert "--mirror [eu|us]" in helped and "[default: eu]" in helped
    assert "exit 0 only if the file is in place" in helped
    assert helped.index("--profile") < helped.index("--force") < helped.index("--mirror") < helped.index("--partition")
    local_site.write_settings('[defaults.fetch-file]\ntime = "00:05:00"\n')
    assert "#SBATCH --time=00:05:00" in cli("render", "fetch-file", "https://example.org/a").stdout
    bad = cli("render", "fetch-file", "ftp://example.org/a")
    assert bad.exit_code == 2 and "URL: expected https://" in bad.stderr
    both = cli("render", "fetch-file")
    assert both.exit_code == 2 and "give either URL or --from-file FILE" in both.stderr


def test_a_registered_kind_submits_its_own_task(cli, fetch_kind, local_site, monkeypatch):
    seen: list[tuple[Any, Any]] = []

    def fake_submit(self, spec, folder, script, task):
        seen.append((spec, task))
        return Submitted("local", "424242")

    monkeypatch.setattr(LocalBackend, "submit", fake_submit)
    result = cli("submit", "fetch-file", "https://example.org/data.bin", "--json")
    assert result.exit_code == 0, result.output
    [(spec, task)] = seen
    assert task is fetch_file and spec.kind == "fetch-file" and spec.template == "fetch-file.sh.j2"
    assert isinstance(spec.task, FetchFile) and spec.task.url == "https://example.org/data.bin"


def test_the_registry():
    assert kinds.names() == ["pull-image", "download-model"]
    assert [k.artefact for k in kinds.KINDS.values()] == ["image", "snapshot"]
    assert kinds.get("pull-image").template == "pull-image.sh.j2"
    assert kinds.get("download-model").task().__name__ == "download_model"
    assert kinds.registering() == ["download-model"]
    with pytest.raises(BadInput, match="unknown kind 'pull-images': one of pull-image, download-model"):
        kinds.get("pull-images")
    with pytest.raises(ValueError, match="already registered"):
        kinds.register(kinds.get("pull-image"))


# ------------------------------------------------------------------ the rules the layout keeps


@pytest.mark.parametrize(
    ("args", "loaded"),
    [(["--help"], False), (["status", "--help"], False), (["submit", "pull-image", "--help"], True)],
)
def test_kinds_are_loaded_only_by_what_needs_them(args, loaded):
    """``--help`` and ``status`` (whose module holds ``list --kind``) do not load the kind modules; a
    kind's own command does, and then no heavy library, configuration or spec comes with them."""
    code = (
        "import sys\n"
        "from blackfish_jobs.cli import cli\n"
        f"try:\n    cli.main({args!r}, prog_name='bfjobs')\nexcept SystemExit:\n    pass\n"
        "heavy = ('submitit', 'sqlalchemy', 'huggingface_hub', 'jinja2', 'blackfish_jobs.specs',"
        " 'blackfish_jobs.config')\n"
        "print('blackfish_jobs.kinds' in sys.modules, [m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == f"{loaded} []"



def _code_strings(tree: ast.AST) -> Iterator[ast.Constant]:
    """String constants that are not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


def test_only_the_kinds_package_names_a_kind():
    names = set(kinds.names())
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "kinds":
            continue
        for node in _code_strings(ast.parse(path.read_text())):
            if any(name in node.value for name in names):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert not found, found


def test_layers_below_the_kinds_do_not_import_them():
    """config, specs, render, backends, store and node take kind names and values as arguments."""
    below = [PACKAGE / "config.py", PACKAGE / "specs.py", PACKAGE / "render.py", PACKAGE / "verify.py"]
    for package in ("backends", "store", "node"):
        below += sorted((PACKAGE / package).rglob("*.py"))
    for path in below:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [alias.name for alias in node.names]
                assert not any(n == "kinds" or n.endswith(".kinds") or n.startswith("kinds") for n in names), path
