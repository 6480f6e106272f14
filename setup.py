"""The packages of the wheel; everything else about the build is in pyproject.toml.

Only this is here because pyproject.toml cannot say it: every package found under bridge/
and providers/ (so a new subpackage is never left out), plus templates/ installed as the
package bridge.templates (its folder is set in pyproject.toml's package-dir). The layout
of the repository stays as it is; the wheel gets bridge/templates/.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages(
            include=["bridge", "bridge.*", "providers", "providers.*"],
            exclude=["*.__pycache__"],
        ),
        "bridge.templates",
    ],
)
