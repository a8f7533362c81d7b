"""
The status site: the HTTP API and pages (L{site}), the status model
(L{status}) and the status page (L{page}).
"""
