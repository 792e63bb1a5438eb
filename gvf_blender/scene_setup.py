"""What the Gaussian look needs from the scene, checked and applied only on request (never by the import).

- View transform Standard, no look: the splat colours are display values converted to scene-linear; Standard
  shows them back as they are, AgX and Filmic tone-map them (paler colours, a grey white background).
- Cycles transparent bounces: every splat a camera ray passes is one transparent bounce. 8 (the default) cuts
  overlapping splats off; the minimum as high as the maximum stops Cycles from ending those rays at random
  (Russian roulette), which otherwise leaves speckles that take many samples to average out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

TRANSPARENT_BOUNCES = 128


@dataclass(frozen=True)
class Requirement:
    key: str
    label: str
    needed: Any
    current: Any

    @property
    def met(self) -> bool:
        return self.current >= self.needed if isinstance(self.needed, int) else self.current == self.needed


def _setting(path: str) -> tuple[Callable, Callable]:
    """(get(scene), set(scene, value)) of a dotted attribute path below the scene."""
    *owners, name = path.split(".")

    def owner(scene):
        for attr in owners:
            scene = getattr(scene, attr)
        return scene
    return (lambda scene: getattr(owner(scene), name)), (lambda scene, value: setattr(owner(scene), name, value))


# key: (label, scene attribute path, needed value; an int is a minimum)
_SETTINGS = {
    "view_transform": ("View transform", "view_settings.view_transform", "Standard"),
    "look": ("Look", "view_settings.look", "None"),
    "transparent_max_bounces": ("Cycles transparent bounces", "cycles.transparent_max_bounces", TRANSPARENT_BOUNCES),
    "min_transparent_bounces": ("Cycles transparent bounces without random termination",
                                "cycles.min_transparent_bounces", TRANSPARENT_BOUNCES),
}


def look_requirements(scene) -> list[Requirement]:
    """Each setting the look needs, with the scene's current value."""
    return [Requirement(key, label, needed, _setting(path)[0](scene))
            for key, (label, path, needed) in _SETTINGS.items()]


def unmet_requirements(scene) -> list[Requirement]:
    return [r for r in look_requirements(scene) if not r.met]


def apply_look_settings(scene, keys=None) -> list[str]:
    """Sets the unmet settings (all, or those in `keys`) to what the look needs. Returns the keys changed."""
    changed = []
    for r in unmet_requirements(scene):
        if keys is None or r.key in keys:
            _setting(_SETTINGS[r.key][1])[1](scene, r.needed)
            changed.append(r.key)
    return changed
