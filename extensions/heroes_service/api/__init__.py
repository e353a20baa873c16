"""REST resources of the service, one module per resource, mounted below ``settings.api_prefix``.

``access.py`` holds the one table of who may call what. Reserved resources (data, workflow, cluster,
template, decision) are written by their own issues as ``api/<name>.py`` exporting ``router``; the app
includes each one that exists (see ``access.RESERVED``).
"""
