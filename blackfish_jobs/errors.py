"""Typed errors. The CLI turns each into one line on stderr and an exit code.

Exit codes: 0 success, 1 job or cluster failure, 2 bad input (arguments or configuration).
"""

from __future__ import annotations


def show(value: object, limit: int = 60) -> str:
    """A one-line, bounded, escaped rendering of a (possibly hostile) value for messages."""
    text = repr(str(value))
    if len(text) > limit:
        text = text[: limit - 4] + "...'"
    return text


class BfjobsError(Exception):
    """Base class: a failure we can explain in one line."""

    exit_code = 1

    def __str__(self) -> str:
        # Never let a message span lines: values inside are already escaped with show(),
        # this is the last guard for messages that wrap an external error.
        return " ".join(super().__str__().split())


class BadInput(BfjobsError):
    """An argument or option is invalid. Nothing was submitted or written."""

    exit_code = 2


class ConfigError(BadInput):
    """profiles.cfg or bfjobs.toml is missing something or holds an invalid value."""


class NotWritable(BadInput):
    """The caller cannot write where the artefact would be published."""


class JobNotFound(BadInput):
    """No bfjobs job matches the given id."""


class TemplateError(BadInput):
    """A (site) template is missing, does not parse, or uses an undefined variable."""


class NameCollision(BfjobsError):
    """An image file of the requested name exists but its record does not say it is the request.

    Exit 1 (not 2): the request is valid; what is on disk stands in its way. Nothing was submitted.
    """


class TagMoved(BfjobsError):
    """The image in place came from the same reference, but its tag now names another digest.

    Exit 1: the request is valid; ``--force`` replaces the image. Nothing was submitted.
    """


class RegistryRefused(BfjobsError):
    """A registry answered that an image cannot be pulled (no such tag or digest, no access, or
    an answer no registry should give). Raised at submit, before anything is written."""


class ClusterError(BfjobsError):
    """Slurm refused the job or could not be reached."""


class RemoteUnreachable(ClusterError):
    """ssh could not reach the cluster, or bfjobs could not start there: nothing was sent."""


class ConnectionLost(ClusterError):
    """The connection to the cluster broke after a request was sent: what it did is not known yet."""


class MalformedAnswer(ClusterError):
    """The cluster answered, but not with what the protocol says: what it did is not known."""


class HubRefused(BfjobsError):
    """The hub answered that a download cannot be served (no such repo, revision or access).

    Raised at submit, before anything is written or submitted: the job would only fail.
    """


class JobFailed(BfjobsError):
    """The job ended in a state other than COMPLETED."""


class TaskError(Exception):
    """Raised on the compute node when the work itself fails (message ends up as the reason)."""
