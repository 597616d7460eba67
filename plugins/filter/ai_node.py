"""Decide on the controller what a GPU node needs shipped, without hashing.

One filter, documented in the adjacent ``ai_node_archive_marker.yml``
(``ansible-doc -t filter ai_node_archive_marker``):

``ai_node_archive_marker(path, key)``
    The name of the marker file a node keeps once it has loaded the image
    archive ``path`` (a file on the controller) under ``key``:
    ``<key>.tar.<12 hex digits>.loaded``. The digits come from the archive's
    name, size and modification time (nanoseconds), as rsync decides what
    changed, so a multi-gigabyte archive is never read to find that it is the
    one already shipped; a rebuilt or replaced archive gets another marker.
"""

from __future__ import annotations

import hashlib
import os
import re

from ansible.errors import AnsibleFilterError

KEY = re.compile(r"^[a-z][a-z0-9_]*$")


def archive_identity(path):
    """Return the archive's name, size and modification time as one string."""
    stat = os.stat(path)
    return f"{os.path.basename(path)} {stat.st_size} {stat.st_mtime_ns}"


def marker_name(key, identity):
    """Return the marker file name of an archive key and identity string."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return f"{key}.tar.{digest}.loaded"


def ai_node_archive_marker(path, key):
    """Return the marker file name for the image archive at ``path`` (see module docs)."""
    if not isinstance(key, str) or not KEY.match(key):
        raise AnsibleFilterError(
            f"ai_node_archive_marker: the archive key must be a lower-case name, not {key!r}"
        )
    if not isinstance(path, str) or not path:
        raise AnsibleFilterError(f"ai_node_archive_marker: {key}: no archive path given")
    try:
        return marker_name(key, archive_identity(path))
    except OSError as e:
        raise AnsibleFilterError(
            f"ai_node_archive_marker: {key}: cannot read the image archive {path} on the "
            f"controller: {e.strerror}"
        ) from None


class FilterModule:
    """Filters of the ai_node role."""

    def filters(self):
        """Map filter names to functions."""
        return {"ai_node_archive_marker": ai_node_archive_marker}
