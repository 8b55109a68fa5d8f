"""blackfish-jobs: pull Apptainer images and download models for Blackfish as Slurm jobs.

The package is a library first: :class:`blackfish_jobs.api.Client` offers every command and
returns result objects; the Click CLI (:mod:`blackfish_jobs.cli`) only opens a client, calls
one method and prints. Importing it is cheap: heavy libraries (submitit, SQLAlchemy,
huggingface_hub) are imported only by the modules that need them.
"""

__version__ = "0.1.0"
