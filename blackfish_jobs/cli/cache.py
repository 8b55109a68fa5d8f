"""``bfjobs cache ls|rm|prune|verify``, ``bfjobs verify`` and ``bfjobs sync``: the artefacts in
the caches and Blackfish's model table."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ..api import human_bytes
from ._output import echo_err, print_json
from ._utils import json_option, older_than_option, profile_option

if TYPE_CHECKING:
    from ..api import CacheListResult, CachePruneResult, CacheRemoveResult, Client


@click.command()
@click.argument("refs", nargs=-1, metavar="[JOB_ID|PATH]...")
@profile_option
@json_option("Print one JSON object of findings (see docs/json.md).")
@click.option(
    "--accept-unverified", is_flag=True, help="Exit 0 for artefacts with nothing to check against (UNVERIFIED)."
)
@click.pass_obj
def verify(
    client: Client, refs: tuple[str, ...], profile_name: str | None, as_json: bool, accept_unverified: bool
) -> None:
    """Check artefacts for corruption: images against the sha256 recorded when they were pulled
    (in the cache's .bfjobs folder, or the job's result), snapshots against the hub's tree listing.
    A PATH may be an image, a snapshot, or a folder of them (everything under it is checked).
    Without arguments: every artefact of a completed job. Exit 0 only if every artefact is OK
    (or UNVERIFIED, with --accept-unverified). Reads every byte: run it on a data-transfer node."""
    result = client.verify(list(refs), profile=profile_name, accept_unverified=accept_unverified)
    if as_json:
        print_json(result)
    else:
        for f in result.findings:
            note = f" ({f.problem})" if f.problem else ""
            click.echo(f"{f.status:<10} {f.kind:<8} {f.path}{note}")
    result.raise_for_status()


@click.command()
@json_option("Print one JSON object: registered and waiting counts (see docs/json.md).")
@click.pass_obj
def sync(client: Client, as_json: bool) -> None:
    """Register finished downloads in Blackfish's model table (after Blackfish created it)."""
    result = client.sync()
    if as_json:
        print_json(result)
    else:
        click.echo(f"registered {result.registered} model(s) in Blackfish's model table; {result.waiting} waiting")
    if result.notice:
        echo_err(result.notice)


# ------------------------------------------------------------------------------- bfjobs cache


@click.group()
def cache() -> None:
    """Look after the caches: list, remove and prune models and images, verify them."""


cache.add_command(verify)

shared_option = click.option(
    "--shared",
    is_flag=True,
    help="Act on the profile's shared cache (cache_dir; needs write permission there) instead of home_dir.",
)
dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Print what would go and the bytes it frees; touch nothing."
)


def _progress(verb: str) -> Callable[[int, int], None] | None:
    """On a terminal, one updating stderr line while a removal runs (slow filesystems take long)."""
    if not sys.stderr.isatty():
        return None
    started = time.monotonic()

    def show(done: int, freed: int) -> None:
        if time.monotonic() - started > 0.5:
            sys.stderr.write(f"\r{verb}: {done} entries, {human_bytes(freed)} freed\x1b[K")
            sys.stderr.flush()

    return show


def _removing(verb: str, quiet: bool, call: Callable[[Any], Any], show: Callable[[Any], None]) -> None:
    """Run a removal with its progress line (unless ``quiet``), clear the line, show the result."""
    progress = None if quiet else _progress(verb)
    try:
        result = call(progress)
    finally:
        if progress is not None:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
    show(result)


@cache.command("ls")
@profile_option
@click.option("--check-upstream", is_flag=True,
              help="Ask each image's registry what its tag names now, and mark the tags that moved.")
@json_option("Print one JSON object: the artefacts and each cache's free space (see docs/json.md).")
@click.pass_obj
def ls(client: Client, profile_name: str | None, check_upstream: bool, as_json: bool) -> None:
    """Every model snapshot and image in the profile's shared cache (cache_dir) and home cache
    (home_dir), with sizes (a blob shared by two snapshots counts in each), the refs pointing at
    each snapshot, the digest each image was pulled from, whether Blackfish's model table has it,
    and the free space of each cache."""
    result = client.cache_ls(profile=profile_name, check_upstream=check_upstream)
    if as_json:
        print_json(result)
        return
    _print_listing(result, check_upstream)


def _shown(text: str) -> str:
    """A name read from disk as one printable cell (a folder name may hold escape codes)."""
    return "".join(c if c.isprintable() and not c.isspace() else "?" for c in text)


def _text(text: str) -> str:
    """A line naming files from disk, printable (escape codes and newlines never reach the terminal)."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _upstream(entry: Any) -> str:
    """``--check-upstream``'s cell: current, moved (to what), or why it is not known."""
    up = entry.upstream or {}
    if up.get("error"):
        return "unknown"
    if up.get("moved"):
        return "MOVED to " + str(up.get("digest"))[7:19]
    return "current" if up.get("moved") is False else "unknown"


def _print_listing(result: CacheListResult, check_upstream: bool = False) -> None:
    tty = sys.stdout.isatty()
    table = [("WHERE", "KIND", "SIZE", "ARTEFACT", "REVISION", "REFS", "BLACKFISH", "PATH")]
    if check_upstream:
        table = [("WHERE", "KIND", "SIZE", "ARTEFACT", "REVISION", "REFS", "BLACKFISH", "UPSTREAM", "PATH")]
    for e in sorted(result.entries, key=lambda e: (e.where != "shared", e.kind, e.repo_id or e.name or "", e.path)):
        blackfish = "-" if e.blackfish is None else "yes" if e.blackfish else "no"
        if e.kind == "model":
            revision = (e.commit or "")[:12] + (" (broken)" if e.dangling else "")
            row = (e.where, e.kind, human_bytes(e.bytes), _shown(e.repo_id or ""), revision,
                   _shown(",".join(e.refs)) or "-", blackfish, "" if tty else _shown(e.path))
        else:
            row = (e.where, e.kind, human_bytes(e.bytes), _shown(e.name or ""), _shown((e.digest or "")[7:19]) or "-",
                   _shown(e.tag or "") or "-", "-", "" if tty else _shown(e.path))
        if check_upstream:
            row = (*row[:-1], _upstream(e) if e.kind == "image" else "-", row[-1])
        table.append(row)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() + "  " + r[-1])
    for space in result.spaces:
        mine = [e for e in result.entries if e.where == space.where]
        free = "not there" if not space.exists else f"{human_bytes(space.free_bytes or 0)} free"
        click.echo(
            f"{space.where:<6} cache {space.path}: {len(mine)} artefact(s), "
            f"{human_bytes(sum(e.bytes for e in mine))}; filesystem: {free}"
        )
    for e in result.entries:
        error = (e.upstream or {}).get("error")
        if e.kind == "image" and error:
            click.echo(_text(f"{e.name}: upstream unknown: {error}"))


@cache.command("rm")
@click.argument("targets", nargs=-1, metavar="TARGET...")
@shared_option
@profile_option
@dry_run_option
@json_option("Print one JSON object: what was removed and the bytes freed (see docs/json.md).")
@click.pass_obj
def rm(client: Client, targets: tuple[str, ...], shared: bool, profile_name: str | None, dry_run: bool,
       as_json: bool) -> None:
    """Remove model snapshots (REPO_ID@REV: a commit, or a branch/tag in the cache's refs), whole
    models (REPO_ID: every revision) or images (NAME.sif) from your home_dir cache (--shared: the
    shared cache), with the refs and blobs only they use and their rows in Blackfish's model table.
    A snapshot disappears in one step (no reader sees half of it); what a running job is writing
    is refused."""
    _removing(
        "removing",
        dry_run or as_json,
        lambda progress: client.cache_rm(
            list(targets), profile=profile_name, shared=shared, dry_run=dry_run, progress=progress
        ),
        _print_removals if not as_json else print_json,
    )


def _print_removals(result: CacheRemoveResult) -> None:
    verb = "would remove" if result.dry_run else "removed"
    for r in result.removals:
        if r.kind == "model":
            what = f"{r.repo_id}@{r.commits[0][:12]}"
            if len(r.commits) != 1:
                what = f"{r.repo_id} ({len(r.commits)} revisions)"
            extra = f"; refs {', '.join(r.refs)}" if r.refs else ""
            extra += "; the whole repo folder" if r.whole_repo else f"; {len(r.blobs)} blob(s) only it uses"
        else:
            what, extra = r.target, ""
        click.echo(_text(f"{verb} {r.kind} {what} from the {r.where} cache: {human_bytes(r.bytes)}{extra} ({r.path})"))
    total = f"{human_bytes(result.freed)} {'would be ' if result.dry_run else ''}freed"
    rows = f"; {result.blackfish_rows} row(s) removed from Blackfish's model table" if result.blackfish_rows else ""
    click.echo(total + rows)


@cache.command("prune")
@shared_option
@profile_option
@dry_run_option
@older_than_option("Only leftovers and unused blobs older than AGE (30m, 12h, 7d, 2w).")
@json_option("Print one JSON object: the leftovers and Blackfish rows removed (see docs/json.md).")
@click.pass_obj
def prune(client: Client, shared: bool, profile_name: str | None, dry_run: bool, older_than: float | None,
          as_json: bool) -> None:
    """Remove leftovers from your home_dir cache (--shared: the shared cache): staging folders and
    partial files of killed jobs that no running job owns, blobs no snapshot uses, refs whose
    snapshot is gone, and Blackfish model rows whose snapshot is gone (as its own refresh would)."""
    _removing(
        "pruning",
        dry_run or as_json,
        lambda progress: client.cache_prune(
            profile=profile_name, shared=shared, dry_run=dry_run, older_than=older_than, progress=progress
        ),
        _print_prune if not as_json else print_json,
    )


def _print_prune(result: CachePruneResult) -> None:
    verb = "would remove" if result.dry_run else "removed"
    for x in result.leftovers:
        said = f"left {x.what}" if x.skipped else f"{verb} {x.what}"
        why = f" ({x.skipped})" if x.skipped else f" ({x.detail})" if x.detail else ""
        click.echo(_text(f"{said}: {x.path}, {human_bytes(x.bytes)}{why}"))
    for repo, commit, model_dir in result.gone_rows:
        click.echo(_text(f"{verb} Blackfish model row {repo}@{commit[:12]} ({model_dir}): its snapshot is gone"))
    if not result.leftovers and not result.gone_rows:
        click.echo("nothing to prune")
    else:
        click.echo(f"{human_bytes(result.freed)} {'would be ' if result.dry_run else ''}freed")
