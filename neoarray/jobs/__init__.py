"""Parallel analytics jobs over ``neoarray.ndarray`` arrays.

A job splits the chunks of an array into *pieces* (ranges of chunk keys), runs a
piece anywhere an executor puts it, and merges the results:

``reduce(array, name, ...)``
    a reduction (``sum``, ``mean``, ``std``, ``histogram``, ``argmax``...) of a
    committed snapshot of the array; returns numpy's answer.
``map_blocks(fn, *arrays, out=None)`` (:mod:`neoarray.jobs.blocks`)
    ``fn`` applied chunk by chunk, written to a new array inside the caller's
    transaction; :func:`run` runs the same as a job whose pieces commit one by one.

Executors (:mod:`neoarray.jobs.executors`): ``threads`` (default: kernels release
the GIL), ``processes`` (each opens its own client), ``dask`` (a Dask distributed
cluster, optional dependency) and ``storage`` (the storage nodes reduce the chunks
they hold with named built-in kernels; only partial results cross the network).

Jobs retry a failed piece (``attempts_max``), show a progress bar on a terminal, and
with ``state_dir`` resume after an interruption without redoing finished pieces.
``neoarray job run ...`` is the command-line entry for workflow engines: it prints
one JSON document.
"""
from .blocks import map_blocks
from .core import Job, JobError, JobResult, JobSpec, reduce, run

__all__ = ["Job", "JobError", "JobResult", "JobSpec", "map_blocks", "reduce", "run"]
