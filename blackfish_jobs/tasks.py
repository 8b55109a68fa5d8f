"""The node functions under the names bfjobs 0.1 pickled (``blackfish_jobs.tasks.pull_image``).

A job submitted before the redesign and still queued when a site upgrades bfjobs is unpickled
on the node by the new install: without these names it would fail with an import error. Its
request classes are found through :mod:`.specs`. Nothing in bfjobs imports this module.
"""

from .node.download import download_model
from .node.pull import pull_image

__all__ = ["download_model", "pull_image"]
