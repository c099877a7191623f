"""Print a pyproject.toml's dependencies (optionally with extras), one per line: the Dockerfiles
install them in a layer of their own, before codedpo's code is copied in.

    python requirements.py pyproject.toml [EXTRA ...]
"""

import sys
import tomllib

with open(sys.argv[1], "rb") as handle:
    project = tomllib.load(handle)["project"]
lines = list(project.get("dependencies", []))
for extra in sys.argv[2:]:
    lines += project.get("optional-dependencies", {})[extra]
print("\n".join(lines))
