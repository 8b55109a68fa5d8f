"""Asking the hub which commit a repo's revision names, with the request ``snapshot_download`` makes.

Used at submit (a repo, branch or commit that does not exist is refused before it costs a Slurm
job, and a hit pins the job to the commit) and on the node (one line naming the endpoint for
the job's reason). huggingface_hub is imported only when a request is made: it is heavy.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .layout import is_commit

if TYPE_CHECKING:
    from huggingface_hub.errors import HfHubHTTPError

#: Seconds bfjobs waits for the hub at submit before letting the node resolve the revision.
TIMEOUT = 5.0


class Miss(Exception):
    """The hub answered: this repo, revision or access does not exist (one line, no secret)."""


class Unreachable(Exception):
    """The hub could not be asked from here (network, offline mode, or an answer unlike a hub's)."""


#: huggingface_hub's own default (its ``constants.ENDPOINT`` without HF_ENDPOINT), without importing it.
DEFAULT_ENDPOINT = "https://huggingface.co"


def endpoint_url(endpoint: str | None) -> str:
    """The endpoint huggingface_hub uses: the configured one, else its own default.

    bfjobs' ``hf_endpoint`` already holds ``HF_ENDPOINT`` when bfjobs.toml sets none, so the
    default is huggingface_hub's (``https://huggingface.co``).
    """
    return endpoint.rstrip("/") if endpoint else DEFAULT_ENDPOINT


def unexplained_404(exc: HfHubHTTPError) -> str | None:
    """``METHOD /path`` on ``host`` when the answer was a 404 that names no Hub error, else None.

    The Hub (and a mirror relaying it) says why it answers 404 (``X-Error-Code: RepoNotFound``,
    ``RevisionNotFound``...); a bare 404 is what a mirror answers for an endpoint it does not
    implement (huggingface_hub #3681), so the repo may well exist there.
    """
    response = exc.response
    if response is None or response.status_code != 404 or response.headers.get("X-Error-Code"):
        return None
    from urllib.parse import urlsplit

    url = urlsplit(str(response.url))
    try:
        method = response.request.method
    except RuntimeError:  # a response built without its request
        method = "GET"
    host = f"{url.hostname}:{url.port}" if url.port else (url.hostname or "")
    return f"{method} {url.path} on {host}"


_USERINFO = re.compile(r"(?<=//)[^/@\s]*@")


def scrub(text: str) -> str:
    """``text`` without the ``user:password@`` of any URL in it: an endpoint may carry credentials,
    and error lines reach stderr, job reasons and the DB."""
    return _USERINFO.sub("", text)


def describe_refusal(exc: HfHubHTTPError, repo_id: str, revision: str | None, endpoint: str) -> str:
    """One line for an HTTP error answer of the hub, naming repo, revision and endpoint (without
    credentials); a missing repo or revision (the hub said so) is told apart from a bare 404."""
    return scrub(_describe_refusal(exc, repo_id, revision, endpoint))


def _describe_refusal(exc: HfHubHTTPError, repo_id: str, revision: str | None, endpoint: str) -> str:
    from huggingface_hub import errors

    rev = revision or "main"
    if (request := unexplained_404(exc)) is not None:
        return (
            f"{endpoint} answered 404 with no reason to {request} (for {repo_id}@{rev}): the mirror lacks this "
            "repo or revision, or does not implement this endpoint (the Hub itself names a missing repo or revision)"
        )
    if isinstance(exc, errors.GatedRepoError):
        return f"access to {repo_id}@{rev} on {endpoint} is restricted: set HF_TOKEN or log in (hf auth login)"
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"revision {rev!r} not found in {repo_id} on {endpoint}"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return f"{repo_id}@{rev}: repository not found on {endpoint} (or private: set HF_TOKEN or log in)"
    status = exc.response.status_code if exc.response is not None else "?"
    return f"{endpoint} answered HTTP {status} for {repo_id}@{rev}: {str(exc).strip().splitlines()[0]}"


def is_network_error(exc: BaseException) -> bool:
    """httpx2's transport errors (connection refused, DNS, timeouts) are not OSErrors."""
    return type(exc).__module__.startswith(("httpx", "httpcore"))


def resolve(repo_id: str, revision: str | None, endpoint: str | None) -> str:
    """The commit ``revision`` (``main`` when None) of ``repo_id`` names on the hub.

    One ``GET {endpoint}/api/models/{repo}/revision/{rev}``, as ``snapshot_download`` asks it
    (never the bare repo endpoint some mirrors lack). The token, if any, is read by
    huggingface_hub from ``HF_TOKEN`` or the user's token file. Raises :class:`Miss` when the
    hub says no (4xx) and :class:`Unreachable` when it cannot tell (network, 5xx, 429).
    """
    from huggingface_hub import HfApi, errors

    url = endpoint_url(endpoint)
    rev = revision or "main"
    try:
        info = HfApi(endpoint=url).model_info(repo_id, revision=rev, timeout=TIMEOUT)
    except errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status is None or status >= 500 or status == 429:
            raise Unreachable(f"it answered HTTP {status or '?'}") from None
        raise Miss(describe_refusal(exc, repo_id, revision, url)) from None
    except (OSError, ValueError, TypeError, KeyError) as exc:  # offline mode, DNS; an answer that is no JSON
        raise Unreachable(f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:
        if is_network_error(exc):
            raise Unreachable(f"{type(exc).__name__}: {exc}") from None
        raise
    if not isinstance(info.sha, str) or not is_commit(info.sha):
        raise Unreachable(f"it answered without a commit for {repo_id}@{rev}")
    return info.sha
