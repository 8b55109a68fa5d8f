"""Asking the hub which commit a repo's revision names, with the request ``snapshot_download`` makes.

Used at submit: a repo, branch or commit that does not exist is refused before it costs a Slurm
job, and a hit pins the job to the commit. The one-line wording of the hub's answers is shared
with the node (:mod:`.node.hub_errors`). huggingface_hub is imported only when a request is made:
it is heavy.
"""

from __future__ import annotations

from .layout import is_commit
from .node.hub_errors import describe_refusal, endpoint_url, is_network_error

#: Seconds bfjobs waits for the hub at submit before letting the node resolve the revision.
TIMEOUT = 5.0


class Miss(Exception):
    """The hub answered: this repo, revision or access does not exist (one line, no secret)."""


class Unreachable(Exception):
    """The hub could not be asked from here (network, offline mode, or an answer unlike a hub's)."""


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
