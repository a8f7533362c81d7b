"""
C{python -m cluster.daemon}: the C{clusternode} command (see
L{cluster.daemon.main}).
"""

from cluster.daemon.main import run

if __name__ == "__main__":
    run()
