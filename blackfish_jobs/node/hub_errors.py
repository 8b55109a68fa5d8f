"""The hub's answers in one line: which endpoint, what it said, without credentials.

Used on the node (a download's failure becomes the job's reason) and at submit (``hub.resolve``
refusing a repo or revision that does not exist). huggingface_hub is imported only when an
answer is described: it is heavy.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..errors import TaskError

if TYPE_CHECKING:
    from huggingface_hub.errors import HfHubHTTPError

    from .requests import DownloadModel

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


@contextlib.contextmanager
def translated(req: DownloadModel) -> Iterator[None]:
    """Turn huggingface_hub's and the network's errors into one clear line for the job's reason,
    naming the endpoint the job used (a mirror that fails is told apart from the Hub)."""
    from huggingface_hub import errors

    endpoint = endpoint_url(req.endpoint)
    what = f"{req.repo_id}@{req.revision or 'main'}"
    try:
        yield
    except errors.HfHubHTTPError as exc:
        raise TaskError(describe_refusal(exc, req.repo_id, req.commit or req.revision, endpoint)) from None
    except OSError as exc:
        # snapshot_download hides some hub answers (a bare 404 from a mirror lacking an endpoint, a
        # 5xx) behind "not in the local cache" (LocalEntryNotFoundError): name the answer itself.
        answer = exc.__cause__ if isinstance(exc, errors.LocalEntryNotFoundError) else None
        if isinstance(answer, errors.HfHubHTTPError):
            raise TaskError(describe_refusal(answer, req.repo_id, req.commit or req.revision, endpoint)) from None
        raise TaskError(scrub(f"download of {what} from {endpoint} failed: {type(exc).__name__}: {exc}")) from None
    except Exception as exc:
        if is_network_error(exc):
            raise TaskError(
                scrub(f"download of {what} from {endpoint} interrupted: {type(exc).__name__}: {exc}")
            ) from None
        raise
