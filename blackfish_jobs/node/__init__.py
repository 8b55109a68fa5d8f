"""What runs on the compute node: the requests a job unpickles and the work it does with them.

Owns the node requests (:mod:`.requests`, the dataclasses pickled into a job), ``apptainer pull``
(:mod:`.pull`), ``snapshot_download`` (:mod:`.download`), publishing into a shared cache with its
locks, atomic renames and modes (:mod:`.publish`), hashing shared with ``verify``
(:mod:`.hashing`), the records of published artefacts (:mod:`.records`), progress records
(:mod:`.progress`), the job process' signals and scratch (:mod:`.runtime`) and the hub's
answers in one line (:mod:`.hub_errors`).

May import only ``blackfish_jobs.node.*``, the base layer (``blackfish_jobs.errors``,
``constants``, ``layout``), the standard library, huggingface_hub and filelock (and submitit's
job environment, to find the job's folder): a compute node unpickling a job never loads the
client's validation, configuration, database or Click. No Click, no database here.
"""
