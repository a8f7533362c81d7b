"""
The test suite: C{tests.unit} (in-process, seconds) and C{tests.integration}
(real processes, namespaces, serf, a browser: minutes).

Every Hypothesis property runs under one profile, loaded here before any
test module is imported: derandomized (the same examples on every run, so a
failure reproduces), no example database (nothing written to
C{.hypothesis/}), no deadline (a loaded machine is slow, not wrong).  A
test states only how many examples it wants.
"""

from hypothesis import settings

settings.register_profile(
    "cluster", derandomize=True, database=None, deadline=None, print_blob=False
)
settings.load_profile("cluster")
