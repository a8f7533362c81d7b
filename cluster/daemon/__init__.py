"""
The programs:

  - C{twistd clusternode}: its flags (L{tap}, reading values with
    L{flags}) and the node program it runs (L{program});
  - the local demo, C{python -m cluster.daemon.demo} (L{demo});
  - the certificate helper, C{python -m cluster.daemon.certs} (L{certs});
  - free ports on 127.0.0.1 for local processes (L{ports}).
"""
