"""The admin's Jinja templates and its static files (static/).

This folder is installed as the package ``bridge.templates`` (setup.py), so the admin finds
it with ``importlib.resources.files("bridge.templates")``, the same way from a checkout
and from site-packages.
"""
