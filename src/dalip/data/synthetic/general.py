"""The general-domain part of the synthetic data: shapes, colours, counts, simple scenes.

It plays the role of PlantMix's general data: a different visual world whose captions
keep the text side general while the plant part trains fine-grained recognition.

The first 12 classes are dalip 0.1's (so `general_classes=12` writes the same data);
the 32 after them bind a colour to a shape ("purple hexagon") beside a small distractor
of another colour and shape, so telling them apart takes both attributes of the right object.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from dalip.data.synthetic.render import Pose, background, finish

# (folder name, readable name); order = label order
GENERAL_CLASSES: tuple[tuple[str, str], ...] = (
    ("red_circle", "red circle"),
    ("blue_square", "blue square"),
    ("green_triangle", "green triangle"),
    ("yellow_star", "yellow star"),
    ("two_circles", "two circles"),
    ("three_squares", "three squares"),
    ("striped_pattern", "striped pattern"),
    ("checkerboard", "checkerboard"),
    ("sun_over_hills", "sun over hills"),
    ("house", "house"),
    ("tree", "tree"),
    ("boat_on_water", "boat on water"),
)
_BOUND_COLOURS = ("red", "blue", "green", "yellow", "purple", "orange")
_BOUND_SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross")
GENERAL_CLASSES = GENERAL_CLASSES + tuple(
    (f"{colour}_{shape}", f"{colour} {shape}")
    for shape in _BOUND_SHAPES
    for colour in _BOUND_COLOURS
    if f"{colour}_{shape}" not in ("red_circle", "blue_square", "green_triangle", "yellow_star")
)
_PALETTE = {
    "red": (200, 40, 40),
    "blue": (40, 70, 200),
    "green": (40, 160, 60),
    "yellow": (230, 200, 40),
    "orange": (235, 130, 30),
    "purple": (130, 60, 170),
    "black": (30, 30, 30),
    "white": (240, 240, 240),
}
_FIXED_COLOUR = {
    "red_circle": "red",
    "blue_square": "blue",
    "green_triangle": "green",
    "yellow_star": "yellow",
}


def _jitter(colour: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.normal(0, 14), 0, 255)) for c in colour)


def _shape(
    draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, fill: tuple[int, ...], angle: float
) -> None:
    """A filled circle/square/triangle/star of radius `r` centred at (cx, cy)."""
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        return
    if kind == "cross":  # a plus sign: two bars of width r/2.5
        w = r / 2.5
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
        return
    corners = {"square": 4, "triangle": 3, "star": 10, "hexagon": 6}[kind]
    phi = angle + np.arange(corners) * 2 * np.pi / corners
    radius = np.where(np.arange(corners) % 2 == 1, 0.45 * r, r) if kind == "star" else np.full(corners, r)
    draw.polygon(list(zip(cx + radius * np.cos(phi), cy + radius * np.sin(phi))), fill=fill)


def _count_scene(
    draw: ImageDraw.ImageDraw, kind: str, count: int, canvas: int, rng: np.random.Generator
) -> str:
    """`count` same-coloured shapes side by side; returns the colour name."""
    colour = str(rng.choice(list(_PALETTE)))
    r = canvas * rng.uniform(0.09, 0.13)
    gap = canvas / (count + 1)
    y = canvas * rng.uniform(0.35, 0.65)
    for i in range(count):
        x = gap * (i + 1) + rng.normal(0, canvas * 0.02)
        fill = _jitter(_PALETTE[colour], rng)
        _shape(draw, kind, x, y + rng.normal(0, canvas * 0.04), r, fill, rng.uniform(0, np.pi))
    return colour


def _pattern(draw: ImageDraw.ImageDraw, folder: str, canvas: int, rng: np.random.Generator) -> str:
    a, b = rng.choice(list(_PALETTE), size=2, replace=False)
    step = int(canvas * rng.uniform(0.08, 0.16))
    draw.rectangle([0, 0, canvas, canvas], fill=_PALETTE[str(a)])
    for i in range(0, canvas, 2 * step):
        if folder == "striped_pattern":
            draw.rectangle([i, 0, i + step - 1, canvas], fill=_PALETTE[str(b)])
        else:
            for j in range(0, canvas, step):
                offset = step if (j // step) % 2 else 0
                draw.rectangle([i + offset, j, i + offset + step - 1, j + step - 1], fill=_PALETTE[str(b)])
    return f"{a} and {b}"


def _landscape(draw: ImageDraw.ImageDraw, folder: str, canvas: int, rng: np.random.Generator) -> str:
    """Sky, ground and one subject (sun over hills, house, tree, boat)."""
    horizon = canvas * rng.uniform(0.55, 0.7)
    sky = _jitter((120, 170, 230), rng)
    draw.rectangle([0, 0, canvas, horizon], fill=sky)
    ground = (50, 90, 170) if folder == "boat_on_water" else (70, 140, 60)
    draw.rectangle([0, horizon, canvas, canvas], fill=_jitter(ground, rng))
    x = canvas * rng.uniform(0.3, 0.7)
    s = canvas * rng.uniform(0.16, 0.24)
    if folder == "sun_over_hills":
        draw.ellipse([x - s / 2, horizon - 2.2 * s, x + s / 2, horizon - 1.2 * s], fill=(250, 210, 60))
        for hx in rng.uniform(0, canvas, 3):
            hill = [hx - s * 1.6, horizon - s * 0.7, hx + s * 1.6, horizon + s * 0.7]
            draw.ellipse(hill, fill=_jitter((60, 130, 50), rng))
    elif folder == "house":
        draw.rectangle(
            [x - s, horizon - 1.4 * s, x + s, horizon + 0.2 * s], fill=_jitter((200, 180, 150), rng)
        )
        roof = [(x - 1.2 * s, horizon - 1.4 * s), (x + 1.2 * s, horizon - 1.4 * s), (x, horizon - 2.4 * s)]
        draw.polygon(roof, fill=_jitter((160, 50, 40), rng))
        draw.rectangle([x - 0.25 * s, horizon - 0.6 * s, x + 0.25 * s, horizon + 0.2 * s], fill=(80, 50, 30))
    elif folder == "tree":
        draw.rectangle([x - 0.18 * s, horizon - 1.2 * s, x + 0.18 * s, horizon + 0.2 * s], fill=(100, 65, 35))
        draw.ellipse([x - s, horizon - 2.6 * s, x + s, horizon - 0.9 * s], fill=_jitter((40, 120, 45), rng))
    else:  # boat on water
        hull = [
            (x - 1.3 * s, horizon + 0.2 * s),
            (x + 1.3 * s, horizon + 0.2 * s),
            (x + 0.9 * s, horizon + 0.7 * s),
            (x - 0.9 * s, horizon + 0.7 * s),
        ]
        draw.polygon(hull, fill=_jitter((120, 70, 40), rng))
        sail = [(x, horizon - 1.6 * s), (x, horizon + 0.1 * s), (x + 1.0 * s, horizon + 0.1 * s)]
        draw.polygon(sail, fill=(245, 245, 240))
    return "outdoor"


def _bound_shape(
    draw: ImageDraw.ImageDraw, folder: str, pose: Pose, canvas: int, rng: np.random.Generator
) -> str:
    """A `colour_shape` object at the pose, after a small distractor of another colour and
    shape elsewhere; returns the distractor's description for the caption."""
    colour, kind = folder.split("_")
    other_colour = str(rng.choice([c for c in _BOUND_COLOURS if c != colour]))
    other_kind = str(rng.choice([k for k in _BOUND_SHAPES if k != kind]))
    cx, cy = canvas * (0.5 + np.asarray(pose.shift) * 2)
    r = canvas * pose.scale * 0.7
    corner = rng.integers(4)
    dx, dy = (0.2 if corner % 2 else 0.8), (0.2 if corner // 2 else 0.8)
    _shape(
        draw,
        other_kind,
        canvas * dx,
        canvas * dy,
        r * 0.4,
        _jitter(_PALETTE[other_colour], rng),
        rng.uniform(0, np.pi),
    )
    _shape(draw, kind, cx, cy, r, _jitter(_PALETTE[colour], rng), np.deg2rad(pose.angle))
    return f"with a small {other_colour} {other_kind}"


def render_general(folder: str, pose: Pose, size: int) -> tuple[Image.Image, str]:
    """One general-domain picture `(size, size)` of class `folder`, and a detail word
    (colour or setting) used in its caption."""
    canvas = 2 * size
    rng = np.random.default_rng(pose.texture_seed)
    image = background(pose.background if pose.background in ("gradient", "paper") else "paper", canvas, rng)
    draw = ImageDraw.Draw(image)
    if folder in _FIXED_COLOUR:
        kind = folder.split("_")[1]
        cx, cy = canvas * (0.5 + np.asarray(pose.shift) * 2)
        r = canvas * pose.scale * 0.8
        _shape(draw, kind, cx, cy, r, _jitter(_PALETTE[_FIXED_COLOUR[folder]], rng), np.deg2rad(pose.angle))
        detail = _FIXED_COLOUR[folder]
    elif folder in ("two_circles", "three_squares"):
        count, kind = (2, "circle") if folder == "two_circles" else (3, "square")
        detail = _count_scene(draw, kind, count, canvas, rng)
    elif folder in ("striped_pattern", "checkerboard"):
        detail = _pattern(draw, folder, canvas, rng)
    elif folder in ("sun_over_hills", "house", "tree", "boat_on_water"):
        detail = _landscape(draw, folder, canvas, rng)
    elif folder.partition("_")[0] in _BOUND_COLOURS and folder.partition("_")[2] in _BOUND_SHAPES:
        detail = _bound_shape(draw, folder, pose, canvas, rng)
    else:
        raise ValueError(f"unknown general class {folder!r}")
    return finish(image, pose, size, rng), detail


def general_caption(readable: str, detail: str, rng: np.random.Generator) -> str:
    """A web-like caption for a general-domain picture."""
    article = "an" if readable[0] in "aeiou" else "a"
    noun = readable if readable.split()[0] in ("two", "three") else f"{article} {readable}"
    styles = (
        f"a photo of {noun}",
        readable,
        f"a simple drawing of {noun}",
        f"clip art: {readable}",
        f"{readable}, {detail}" if detail != "outdoor" else f"{readable} outdoors",
        f"an illustration showing {noun}",
    )
    return styles[int(rng.integers(len(styles)))]
