"""Where ``log_image`` stores each step of an image, shared by the SDK (which names the
files) and the API (which lists each image file with its image name and step).

Step ``s`` of image ``n`` is the artifact ``n/step_<s><ext>`` (``loss_curve/step_3.png``),
so every step is its own file and a newer image never replaces an older one; the name
may itself hold '/'. A name that already ends in the extension loses it
(``"loss_curve.png"`` → ``loss_curve/step_0.png``). Images stored before steps were kept
are one file per name, without ``/step_``: they read back with no step.
"""

from __future__ import annotations

import re

__all__ = ["image_artifact_name", "image_of"]

#: ``<image name>/step_<step><.ext>``.
_STORED = re.compile(r"(?P<image>.+)/step_(?P<step>-?[0-9]{1,19})\.[A-Za-z0-9]{1,5}")


def image_artifact_name(name: str, step: int, suffix: str) -> str:
    """The artifact that holds step ``step`` of image ``name`` (``suffix`` like ``.png``)."""
    if name.lower().endswith(suffix.lower()) and len(name) > len(suffix):
        name = name[: -len(suffix)]
    return f"{name}/step_{step}{suffix}"


def image_of(artifact_name: str) -> tuple[str, int | None]:
    """An image artifact's image name and step; ``(name, None)`` for an image stored
    before steps were kept."""
    match = _STORED.fullmatch(artifact_name)
    if match is None:
        return artifact_name, None
    return match["image"], int(match["step"])
