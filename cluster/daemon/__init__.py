"""
The programs: C{twistd clusternode} (L{tap}), the local demo (L{demo})
and the certificate helper (L{certs}).
"""
