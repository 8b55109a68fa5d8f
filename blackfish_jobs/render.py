"""Jinja rendering of sbatch scripts: the only place sbatch text is produced.

Quoting is done here, once, for every template: each ``{{ expression }}`` is passed through
:func:`_finalize`, which shell-quotes it unless it is a :class:`Shell` fragment this module
built itself (``#SBATCH`` lines, argv lists, admin setup lines). Templates never quote by hand.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .backends.folder import submit_argv
from .errors import TemplateError, show
from .specs import JobSpec
from .validate import invisible

#: Placeholder bfjobs id used by ``bfjobs render`` (a real id exists only once a job is submitted).
PREVIEW_ID = "render-preview"

_SBATCH_VALUE = re.compile(r"[A-Za-z0-9_.,:=/@+&|\[\]*()!-]+")
_SBATCH_PATTERN = re.compile(r"[A-Za-z0-9_.,:=/@+%-]+")  # output/error paths: %j is intended
_PLAIN = re.compile(r"[\x20-\x7e]*")


def _has_control(text: str) -> bool:
    """Any :func:`validate.invisible` character (the rule of :func:`validate.basic`). Once quoted
    they are inert, but they make a script read differently from what runs."""
    if _PLAIN.fullmatch(text):  # the common case, without a per-character lookup
        return False
    return any(invisible(ch) for ch in text)


class Shell(str):
    """A fragment that is already valid shell text; the finalizer leaves it as it is."""


def _finalize(value: Any) -> str:
    """Quote every value that reaches the script, and refuse control characters outright."""
    if value is None:
        raise TemplateError("template printed an empty (None) value")
    if isinstance(value, Shell):
        return value
    text = str(value)
    if _has_control(text):
        raise TemplateError(f"refusing to render a value with control characters: {show(text)}")
    return shlex.quote(text)


def argv(items: Sequence[Any]) -> Shell:
    """Filter: a command line, each word quoted."""
    return Shell(" ".join(_finalize(str(x)) for x in items))


def sbatch_line(flag: str, value: str | int | None = None, *, allow_percent: bool = False) -> Shell:
    """One ``#SBATCH --flag=value`` line; values are validated, never quoted (sbatch is no shell)."""
    if not re.fullmatch(r"[a-z][a-z-]*", flag):
        raise TemplateError(f"invalid #SBATCH flag {show(flag)}")
    if value is None:
        return Shell(f"#SBATCH --{flag}")
    text = str(value)
    allowed = _SBATCH_PATTERN if allow_percent else _SBATCH_VALUE
    if not allowed.fullmatch(text):
        raise TemplateError(f"#SBATCH --{flag}: value not allowed: {show(text)}")
    return Shell(f"#SBATCH --{flag}={text}")


def log_pattern(array: str | None) -> str:
    """submitit's log names: ``%j_0_log`` for a job, ``%A_%a_0_log`` for an array element."""
    return "%A_%a_0_log" if array else "%j_0_log"


def sbatch_directives(spec: JobSpec, folder: Path, job_name: str, array: str | None = None) -> list[Shell]:
    """The header lines submitit relies on (output/error paths) plus the site's resources."""
    s = spec.settings
    logs = log_pattern(array)
    lines = [
        sbatch_line("job-name", job_name),
        sbatch_line("output", f"{folder}/{logs}.out", allow_percent=True),
        sbatch_line("error", f"{folder}/{logs}.err", allow_percent=True),
        sbatch_line("open-mode", "append"),
        sbatch_line("signal", "USR2@90"),
        sbatch_line("nodes", 1),
        sbatch_line("ntasks", 1),
    ]
    if array is not None:
        lines.append(sbatch_line("array", array, allow_percent=True))
    for flag, value in (
        ("partition", s.partition),
        ("qos", s.qos),
        ("account", s.account),
        ("time", s.time),
        ("mem", s.mem),
        ("cpus-per-task", s.cpus_per_task),
        ("constraint", s.constraint),
    ):
        if value is not None:
            lines.append(sbatch_line(flag, value))
    return lines


def job_name(spec: JobSpec) -> str:
    """``bfjobs-<kind>-<artefact>``, trimmed to what every scheduler shows."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", spec.target.name)
    return f"bfjobs-{spec.kind}-{stem}"[:80]


def packaged_templates_dir() -> Path:
    """Templates inside the installed wheel, or ``templates/sbatch`` of a source checkout."""
    here = Path(__file__).resolve().parent
    inside = here / "templates" / "sbatch"
    if inside.is_dir():
        return inside
    return here.parent / "templates" / "sbatch"


def _context_class() -> type:
    """A Jinja context whose ``super()`` yields :class:`Shell`: a parent block is template text
    that the renderer already quoted, not a value to quote again."""
    import jinja2.runtime

    class ShellBlockReference(jinja2.runtime.BlockReference):
        def __call__(self) -> Shell:
            return Shell(super().__call__())

    class ShellContext(jinja2.runtime.Context):
        def super(self, name: str, current: Any) -> Any:
            ref = super().super(name, current)
            if isinstance(ref, jinja2.runtime.BlockReference):
                return ShellBlockReference(ref.name, ref._context, ref._stack, ref._depth)
            return ref

    return ShellContext


def environment(site_dir: Path | None = None) -> Any:
    """A Jinja environment: the site's directory first, then the packaged templates.

    The packaged templates are also reachable as ``builtin/<name>`` so a site template can
    ``{% extends "builtin/pull-image.sh.j2" %}`` and replace just one block.
    """
    import jinja2

    packaged = jinja2.FileSystemLoader(str(packaged_templates_dir()))
    loaders: list[jinja2.BaseLoader] = []
    if site_dir is not None:
        if not site_dir.is_dir():
            raise TemplateError(f"templates_dir {site_dir} does not exist or is not a directory")
        loaders.append(jinja2.FileSystemLoader(str(site_dir)))
    loaders.append(packaged)
    loader = jinja2.ChoiceLoader([*loaders, jinja2.PrefixLoader({"builtin": packaged})])
    env = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        autoescape=False,  # noqa: S701 - this is shell, not HTML; _finalize quotes instead
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.context_class = _context_class()
    env.filters["argv"] = argv
    return env


def context(
    spec: JobSpec, folder: Path, bfjobs_id: str, elements: Sequence[JobSpec] | None = None
) -> dict[str, Any]:
    """Everything a template may use. Values are plain data; quoting happens in the finalizer.

    For a job array, ``array`` is the ``--array`` value, ``elements`` the per-element requests
    (each element reads its own request from its pickle), and ``request``/``target`` are the
    first element's.
    """
    s = spec.settings
    array = f"0-{len(elements) - 1}%{s.max_parallel or len(elements)}" if elements else None
    return {
        "version": __version__,
        "kind": spec.kind,
        "bfjobs_id": bfjobs_id,
        "profile": spec.profile.name,
        "folder": str(folder),
        "label": spec.label if not elements else f"{len(elements)} {spec.kind} jobs (a Slurm job array)",
        "target": str(spec.target),
        "request": spec.request_record(),
        "array": array,
        "elements": [e.request_record() for e in elements or ()],
        "sbatch": sbatch_directives(spec, folder, job_name(spec) if not elements else f"bfjobs-{spec.kind}-array",
                                    array),
        "modules": list(s.modules),
        "setup": [Shell(line) for line in s.setup],
        "command": submit_argv(folder),
    }


def render(spec: JobSpec, folder: Path, bfjobs_id: str, elements: Sequence[JobSpec] | None = None) -> str:
    """Render the spec's template (its kind's, ``<kind>.sh.j2``) for ``spec`` (or a job array of ``elements``).

    Template problems become one-line errors.
    """
    import jinja2

    env = environment(spec.settings.templates_dir)
    name = spec.template
    try:
        text = env.get_template(name).render(context(spec, folder, bfjobs_id, elements))
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"template {exc.name} not found") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template {exc.filename or name} line {exc.lineno}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template {name}: {exc.message}") from None
    _check_contract(text, folder, log_pattern("array" if elements else None))
    return text


def _check_contract(text: str, folder: Path, logs: str) -> None:
    """A site template must keep what submitit needs, or jobs could never be re-attached."""
    needed = {
        "export SUBMITIT_EXECUTOR=slurm": "export SUBMITIT_EXECUTOR=slurm",
        "--output": f"#SBATCH --output={folder}/{logs}.out",
        "the submitit command": "submitit.core._submit",
    }
    for what, line in needed.items():
        if line not in text:
            raise TemplateError(f"rendered script lacks {what} (site templates must keep the base blocks)")
