"""blackfish-jobs: pull Apptainer images and download models for Blackfish as Slurm jobs.

The package is a library first (``specs`` → ``render`` → ``backends`` → ``tracking`` → ``db``)
with a thin Click CLI on top. Importing it is cheap: heavy libraries (submitit, SQLAlchemy,
huggingface_hub) are imported only by the modules that need them.
"""

__version__ = "0.1.0"
