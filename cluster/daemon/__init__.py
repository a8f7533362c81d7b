"""
The programs:

  - C{clusternode} (also C{python -m cluster.daemon}): the command that
    runs one node (L{main}), with its flags (L{tap}, reading values with
    L{flags}), the node program it runs (L{program}) and its log
    (L{logs}); C{twistd clusternode} runs the same node through the
    Twisted plugin;
  - the local demo, C{python -m cluster.daemon.demo} (L{demo});
  - the certificate helper, C{python -m cluster.daemon.certs} (L{certs});
  - free ports on 127.0.0.1 for local processes (L{ports}).
"""
