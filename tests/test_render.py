"""Rendering: one quoting mechanism, strict templates, site overrides, submitit's contract."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from blackfish_jobs import config, kinds, render
from blackfish_jobs.errors import TemplateError
from blackfish_jobs.kinds import image


def make_spec(site, uri="docker://ghcr.io/huggingface/text-generation-inference:latest", **overrides):
    site.write_profiles()
    profile = config.load_profile("slurm")
    settings = kinds.load_settings("slurm", "pull-image").merged(**config.check_overrides(**overrides))
    return image.pull_image(uri, profile, settings)


def bash_n(text: str) -> None:
    proc = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_default_script_shape(site):
    spec = make_spec(site, partition="datamover", qos="xfer", account="lab", constraint="intel&ib")
    folder = site.home_dir / "jobs" / "bfjobs" / "abc"
    text = render.render(spec, folder, "abc")
    bash_n(text)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    header = [line for line in lines if line.startswith("#SBATCH")]
    # every directive comes before the first command (sbatch stops reading at the first one)
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert all(lines.index(h) < first_command for h in header)
    for expected in (
        f"#SBATCH --output={folder}/%j_0_log.out",
        f"#SBATCH --error={folder}/%j_0_log.err",
        "#SBATCH --partition=datamover",
        "#SBATCH --qos=xfer",
        "#SBATCH --account=lab",
        "#SBATCH --constraint=intel&ib",
        "#SBATCH --mem=4G",  # the built-in pull default
    ):
        assert expected in header
    assert "export SUBMITIT_EXECUTOR=slurm" in lines
    assert lines[-1].endswith(f"-u -m submitit.core._submit {folder}")
    # exec: Slurm's signals reach the job's Python itself (a shell would exit and leave it running)
    assert lines[-1].startswith("exec ")


def test_values_are_quoted_by_the_renderer(tmp_path):
    """Any {{ value }} is one inert shell word, whatever it contains."""
    env = render.environment()
    canary = tmp_path / "canary"
    for hostile in ["a b", f"$(touch {canary})", f"`touch {canary}`", "'; touch x; '", '"', "*", "~root", "{{x}}"]:
        script = env.from_string("printf '%s' {{ v }}").render(v=hostile)
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path)
        assert out.stdout == hostile
    assert not canary.exists()


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b", "line\u2028sep"])
def test_control_characters_never_render(bad):
    env = render.environment()
    with pytest.raises(TemplateError, match="control characters"):
        env.from_string("echo {{ v }}").render(v=bad)


@pytest.mark.parametrize(("flag", "value"), [("time", "1:00\n#SBATCH --x"), ("partition", "a b"), ("qos", "%j")])
def test_sbatch_values_are_validated(flag, value):
    with pytest.raises(TemplateError):
        render.sbatch_line(flag, value)


def test_site_template_overrides_one_block(site, tmp_path):
    site_dir = tmp_path / "site-templates"
    site_dir.mkdir()
    (site_dir / "pull-image.sh.j2").write_text(
        '{% extends "builtin/pull-image.sh.j2" %}\n'
        "{% block environment %}\n{{ super() }}\nexport SITE_PROXY={{ 'http://proxy:3128' }}\n{% endblock %}\n"
    )
    spec = make_spec(site)
    spec = replace(spec, settings=spec.settings.merged(templates_dir=site_dir))
    text = render.render(spec, site.home_dir / "jobs" / "bfjobs" / "x", "x")
    bash_n(text)
    assert "export SITE_PROXY=http://proxy:3128" in text
    assert "export BFJOBS_PULL_TARGET=" in text  # super() kept the packaged block


def test_site_base_template_replaces_packaged_base(site, tmp_path):
    """A site can replace base.sh.j2 itself; pull-image.sh.j2 then extends the site's base."""
    site_dir = tmp_path / "t"
    site_dir.mkdir()
    (site_dir / "base.sh.j2").write_text(
        '{% extends "builtin/base.sh.j2" %}{% block prelude %}{{ super() }}\nmodule purge\n{% endblock %}'
    )
    spec = make_spec(site)
    spec = replace(spec, settings=spec.settings.merged(templates_dir=site_dir))
    text = render.render(spec, site.home_dir / "jobs" / "bfjobs" / "x", "x")
    assert "module purge" in text


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ('{% extends "builtin/pull-image.sh.j2" %}{% block environment %}{{ no_such_var }}{% endblock %}', "undefined"),
        ("{% if %}", "line 1"),
        ("#!/bin/bash\necho hi\n", "lacks"),
    ],
)
def test_broken_site_templates_are_one_line_errors(site, tmp_path, template, message):
    site_dir = tmp_path / "t"
    site_dir.mkdir()
    (site_dir / "pull-image.sh.j2").write_text(template)
    spec = make_spec(site)
    spec = replace(spec, settings=spec.settings.merged(templates_dir=site_dir))
    with pytest.raises(TemplateError) as info:
        render.render(spec, site.home_dir / "jobs" / "x", "x")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_templates_dir_is_an_error(site, tmp_path):
    spec = make_spec(site)
    spec = replace(spec, settings=spec.settings.merged(templates_dir=tmp_path / "nope"))
    with pytest.raises(TemplateError, match="does not exist"):
        render.render(spec, site.home_dir / "x", "x")


def test_modules_and_setup_lines(site):
    site.write_settings('[defaults]\nmodules = ["apptainer/1.3.4"]\nsetup = ["export A=1", "ulimit -n 4096"]\n')
    spec = make_spec(site)
    text = render.render(spec, site.home_dir / "jobs" / "x", "x")
    bash_n(text)
    assert "module load apptainer/1.3.4 ||" in text
    assert "export A=1\nulimit -n 4096\n" in text


def test_packaged_templates_found():
    assert (render.packaged_templates_dir() / "base.sh.j2").is_file()
    assert (render.packaged_templates_dir() / "pull-image.sh.j2").is_file()
    assert Path(render.packaged_templates_dir()).name == "sbatch"
