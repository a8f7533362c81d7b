"""
In-process tests: the simulated network on a task.Clock, fast loopback
sockets; no real process, namespace, browser or external agent.  Minutes
at most: C{python -m twisted.trial tests.unit}.
"""
