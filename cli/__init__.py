"""The `segearth-geo` command line: a thin click shell over the :mod:`segearth_geo` library.

Installed under the import name ``segearth_geo_cli`` (see pyproject.toml) so that it can
never collide with another distribution's top-level ``cli`` package.
"""
