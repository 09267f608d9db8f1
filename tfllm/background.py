"""Work that runs on a thread of its own while the command goes on.

Worth it only for work that leaves the other thread free to run: an XLA compilation or a
TensorFlow op releases Python's lock while it runs, so a compile or the final evaluation
can overlap with Python work (a plot) or with another compile.
"""

from concurrent.futures import ThreadPoolExecutor


def in_background(fn, *args):
    """`fn(*args)` started on its own thread; returns its Future (`result()` waits for it
    and raises what it raised)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=getattr(fn, "__name__", "fn"))
    future = pool.submit(fn, *args)
    pool.shutdown(wait=False)  # the thread ends with its one task
    return future
