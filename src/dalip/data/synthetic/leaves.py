"""Leaf geometry for the synthetic plant images: outlines, margins and veins.

Everything here is in leaf-local coordinates: the leaf axis runs from the tip at
y = -1 to the base at y = +1, x is across the blade. Outlines are closed polygons as
`(N, 2)` float arrays; veins are lists of `(K, 2)` polylines. Rendering (rotation,
scale, colours, backgrounds) lives in `render.py`.
"""

from __future__ import annotations

import numpy as np

SHAPES = ("ovate", "lanceolate", "cordate", "lobed", "palmate")
MARGINS = ("entire", "serrate", "dentate")
VENATIONS = ("pinnate", "palmate", "parallel")

OUTLINE_POINTS = 320  # after arc-length resampling
# (amplitude, spacing) of margin teeth in leaf units (the leaf is 2 units long)
TEETH = {"entire": (0.0, 1.0), "serrate": (0.09, 0.19), "dentate": (0.15, 0.36)}


def _profile_outline(half_width: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Right side base->tip, then left side tip->base; `(2n, 2)` for n samples of t."""
    y = 1.0 - 2.0 * t
    right = np.stack([half_width, y], axis=1)  # (n, 2)
    left = np.stack([-half_width[::-1], y[::-1]], axis=1)
    return np.concatenate([right, left[1:-1]], axis=0)


def _palmate_outline(n: int) -> np.ndarray:
    """Maple-like blade: five pointed lobes around a centre near the base."""
    phi = np.linspace(-np.pi, np.pi, 2 * n, endpoint=False)  # angle from the tip direction
    lobes = ((1.0 + np.cos(5.0 * phi)) / 2.0) ** 2.5
    sinus = np.clip((np.pi - np.abs(phi)) / 0.9, 0.25, 1.0)  # narrow gap at the petiole
    radius = 0.95 * (0.38 + 0.62 * lobes) * sinus
    return np.stack([radius * np.sin(phi), 0.25 - radius * np.cos(phi)], axis=1)


def base_outline(shape: str, n: int = 160) -> np.ndarray:
    """Untoothed outline of `shape` (one of `SHAPES`): `(N, 2)` polygon."""
    t = np.linspace(0.0, 1.0, n)
    if shape == "ovate":
        width = 0.58 * np.sin(np.pi * t) ** 0.75 * (1.0 + 0.3 * (1.0 - 2.0 * t))
        return _profile_outline(width, t)
    if shape == "lanceolate":
        width = 0.21 * np.sin(np.pi * t) ** 1.1 * (1.0 + 0.35 * (1.0 - 2.0 * t))
        return _profile_outline(width, t)
    if shape == "cordate":
        width = 0.66 * np.sin(np.pi * (0.22 + 0.78 * t)) ** 0.8
        side = _profile_outline(width, t)
        # Two rounded basal lobes meeting in a notch: the heart shape.
        lobe = np.array([[-0.3, 1.1], [-0.14, 1.06], [0.0, 0.72], [0.14, 1.06], [0.3, 1.1]])
        return np.concatenate([side, lobe], axis=0)
    if shape == "lobed":
        lobes = 0.45 + 0.55 * np.abs(np.sin(3.5 * np.pi * t)) ** 0.6
        width = 0.6 * np.sin(np.pi * t) ** 0.7 * lobes
        return _profile_outline(width, t)
    if shape == "palmate":
        return _palmate_outline(n)
    raise ValueError(f"leaf shape must be one of {SHAPES}, got {shape!r}")


def resample(outline: np.ndarray, count: int = OUTLINE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Points evenly spaced along the closed outline, and their arc length `(count,)`."""
    closed = np.concatenate([outline, outline[:1]], axis=0)
    steps = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(steps)])  # (N+1,)
    targets = np.linspace(0.0, arc[-1], count, endpoint=False)
    points = np.stack([np.interp(targets, arc, closed[:, k]) for k in range(2)], axis=1)
    return points, targets


def toothed_outline(shape: str, margin: str) -> np.ndarray:
    """Outline of `shape` with `margin` teeth pushed out along the normal: `(N, 2)`."""
    if margin not in TEETH:
        raise ValueError(f"leaf margin must be one of {MARGINS}, got {margin!r}")
    points, arc = resample(base_outline(shape))
    amplitude, spacing = TEETH[margin]
    if amplitude == 0.0:
        return points
    tangent = np.roll(points, -1, axis=0) - np.roll(points, 1, axis=0)  # (N, 2)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-9
    if np.mean(np.sum(normal * (points - points.mean(axis=0)), axis=1)) < 0:
        normal = -normal  # make it point outwards
    phase = (arc / spacing) % 1.0
    # serrate: forward-leaning saw teeth; dentate: symmetric, coarser teeth
    tooth = phase if margin == "serrate" else 1.0 - np.abs(2.0 * phase - 1.0)
    # no teeth at the very base, where the petiole joins
    fade = np.clip((1.0 - points[:, 1]) / 0.25, 0.0, 1.0)
    return points + normal * (amplitude * tooth * fade)[:, None]


def half_width_at(outline: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Largest |x| of the outline near each height in `ys` (the blade's half width)."""
    near = np.abs(outline[None, :, 1] - ys[:, None]) < 0.06  # (len(ys), N)
    widths = np.where(near, np.abs(outline[None, :, 0]), 0.0)
    return widths.max(axis=1)


def _reach(outline: np.ndarray, origin: np.ndarray, angle: float) -> float:
    """Distance from `origin` to the outline in direction `angle` (0 = towards the tip)."""
    offsets = outline - origin  # (N, 2)
    angles = np.arctan2(offsets[:, 0], -offsets[:, 1])
    gap = np.abs(np.angle(np.exp(1j * (angles - angle))))
    return float(np.linalg.norm(offsets[np.argmin(gap)]))


def _ray(origin: np.ndarray, angle: float, length: float) -> np.ndarray:
    end = origin + length * np.array([np.sin(angle), -np.cos(angle)])
    return np.stack([origin, end])  # (2, 2)


def veins(outline: np.ndarray, venation: str) -> list[np.ndarray]:
    """Vein polylines inside `outline` for `venation` (one of `VENATIONS`); the first is the
    main vein (drawn thicker)."""
    top, bottom = float(outline[:, 1].min()), float(outline[:, 1].max())
    if venation == "pinnate":
        lines = [np.array([[0.0, bottom - 0.05], [0.0, top + 0.06]])]
        for y in np.linspace(bottom - 0.35, top + 0.4, 5):
            origin = np.array([0.0, y])
            for side in (-1.0, 1.0):
                angle = side * 0.85
                lines.append(_ray(origin, angle, 0.85 * _reach(outline, origin, angle)))
        return lines
    if venation == "palmate":
        origin = np.array([0.0, bottom - 0.12])
        return [_ray(origin, a, 0.88 * _reach(outline, origin, a)) for a in (0.0, -0.6, 0.6, -1.25, 1.25)]
    if venation == "parallel":
        ys = np.linspace(bottom - 0.04, top + 0.04, 24)
        widths = half_width_at(outline, ys)
        return [np.stack([c * widths, ys], axis=1) for c in (0.0, -0.55, 0.55, -0.28, 0.28, -0.8, 0.8)]
    raise ValueError(f"leaf venation must be one of {VENATIONS}, got {venation!r}")
