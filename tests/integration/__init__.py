"""
Real processes (C{clusternode}), network namespaces, serf agents,
a browser and the bench scripts: C{python -m twisted.trial tests.integration}.
"""
