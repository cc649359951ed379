"""Rendering synthetic photos with PIL and numpy: backgrounds, leaves, light, blur.

`render_leaf(traits, pose, size)` is a pure function: the species' traits decide what
the leaf is; the `Pose` (sampled per image by `sample_pose`) decides everything else —
rotation, scale, position, lighting, background, blur, occlusion and the random seed
of textures and spot positions. Same traits and pose -> the same pixels, which is how
the tests show that one changed trait changes the image.

Images are drawn at twice the output size and box-downsampled (anti-aliasing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dalip.data.synthetic.leaves import toothed_outline, veins

COLOURS: dict[str, tuple[int, int, int]] = {
    "dark green": (34, 88, 38),
    "light green": (112, 170, 72),
    "yellow-green": (164, 178, 58),
    "blue-green": (44, 112, 104),
    "purple": (104, 44, 96),
    "red": (162, 52, 40),
}
SPOTS = ("none", "brown lesions", "pale spots", "rust pustules")
BACKGROUNDS = ("soil", "grass", "gradient", "litter", "paper")
OCCLUDERS = ("none", "blade", "stone", "finger")


@dataclass(frozen=True)
class Pose:
    """Per-image nuisance parameters (fractions are of the image size)."""

    angle: float  # degrees, leaf axis rotation
    scale: float  # leaf half-length / image size
    shift: tuple[float, float]  # leaf centre offset from the image centre
    background: str
    colour_gain: tuple[float, float, float]  # per-channel gain on the leaf colour
    brightness: float
    light_angle: float  # radians, direction of the light gradient
    light_strength: float
    blur: float  # Gaussian blur radius in output pixels (0: sharp)
    occluder: str
    occluder_at: tuple[float, float]  # occluder centre offset from the leaf centre
    texture_seed: int  # textures, spot positions, sensor noise


def sample_pose(rng: np.random.Generator) -> Pose:
    """Draw one image's nuisance parameters."""
    return Pose(
        angle=float(rng.uniform(0.0, 360.0)),
        scale=float(rng.uniform(0.3, 0.44)),
        shift=(float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.08, 0.08))),
        background=str(rng.choice(BACKGROUNDS)),
        colour_gain=tuple(float(g) for g in rng.uniform(0.88, 1.12, size=3)),  # type: ignore[arg-type]
        brightness=float(rng.uniform(0.72, 1.18)),
        light_angle=float(rng.uniform(0.0, 2.0 * np.pi)),
        light_strength=float(rng.uniform(0.0, 0.35)),
        blur=float(rng.uniform(0.3, 1.0)) if rng.random() < 0.4 else 0.0,
        occluder=str(rng.choice(OCCLUDERS, p=[0.65, 0.15, 0.1, 0.1])),
        occluder_at=(float(rng.uniform(-0.25, 0.25)), float(rng.uniform(-0.25, 0.25))),
        texture_seed=int(rng.integers(2**31)),
    )


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: `(size, size)` float32 from a `cells x cells` grid."""
    grid = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(grid.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0


def _texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Brightness field of a background `(size, size)` float32 around 1."""
    if kind == "gradient":
        ramp = np.linspace(0.75, 1.2, size, dtype=np.float32)
        field = np.broadcast_to(ramp[:, None], (size, size))
    elif kind == "grass":
        streaks = (rng.random((1, size)) * 255).astype(np.uint8).repeat(4, axis=0)  # vertical streaks
        field = 0.7 + 0.6 * np.asarray(Image.fromarray(streaks).resize((size, size)), np.float32) / 255
    else:
        field = 0.75 + 0.5 * _smooth_noise(rng, size, 6 if kind != "paper" else 3)
    grain = rng.standard_normal((size, size), dtype=np.float32) * (0.06 if kind != "paper" else 0.02) + 1.0
    return field * grain


def background(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    """A textured RGB background of `kind` (one of `BACKGROUNDS`), `size` x `size`.

    The texture is computed at half resolution and upsampled: the image is box-reduced
    by 2 afterwards anyway, and this halves the numpy work (the generator's hot spot).
    """
    base = {
        "soil": (96, 70, 48),
        "grass": (70, 110, 50),
        "gradient": (150, 160, 175),
        "litter": (120, 95, 60),
        "paper": (225, 222, 210),
    }[kind]
    tint = np.asarray(base, np.float32) * rng.uniform(0.8, 1.2, size=3)
    half = max(1, size // 2)
    pixels = tint[None, None, :] * _texture(kind, half, rng)[:, :, None]  # (half, half, 3)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).resize((size, size), Image.NEAREST)
    if kind == "litter":
        draw = ImageDraw.Draw(image)
        for _ in range(8):
            x, y = rng.uniform(0, size, 2)
            r = rng.uniform(0.04, 0.12) * size
            shade = tuple(int(c) for c in rng.uniform([90, 60, 30], [170, 120, 70]))
            draw.ellipse([x - r, y - r / 2, x + r, y + r / 2], fill=shade)
    return image


def _to_canvas(points: np.ndarray, pose: Pose, canvas: int) -> np.ndarray:
    """Leaf-local points `(N, 2)` -> canvas pixels: rotate, scale, move."""
    theta = np.deg2rad(pose.angle)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    centre = canvas * (0.5 + np.asarray(pose.shift))
    return points @ rotation.T * (pose.scale * canvas) + centre


def _leaf_colours(colour: str, pose: Pose) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(blade colour, vein colour) after the pose's colour jitter."""
    blade = np.asarray(COLOURS[colour], np.float32) * np.asarray(pose.colour_gain)
    vein = blade + (255.0 - blade) * 0.45  # veins are paler than the blade
    return tuple(int(c) for c in np.clip(blade, 0, 255)), tuple(int(c) for c in np.clip(vein, 0, 255))


def _draw_spots(
    draw: ImageDraw.ImageDraw, mask: np.ndarray, spots: str, leaf_px: float, rng: np.random.Generator
) -> None:
    """Spots at random places inside the blade (`mask` `(H, W)` bool)."""
    if spots == "none":
        return
    count, radius, colours = {
        "brown lesions": (4, 0.13, [(214, 196, 70), (92, 52, 24)]),  # yellow halo, brown core
        "pale spots": (11, 0.06, [(236, 232, 208)]),
        "rust pustules": (16, 0.045, [(214, 112, 28)]),
    }[spots]
    ys, xs = np.nonzero(mask)
    picks = rng.integers(len(xs), size=count)
    for x, y in zip(xs[picks], ys[picks]):
        r = radius * leaf_px * rng.uniform(0.7, 1.3)
        for layer, fill in enumerate(colours):
            rr = r * (1.0 - 0.45 * layer)
            draw.ellipse([x - rr, y - rr, x + rr, y + rr], fill=fill)


def _draw_occluder(draw: ImageDraw.ImageDraw, pose: Pose, canvas: int, rng: np.random.Generator) -> None:
    if pose.occluder == "none":
        return
    cx, cy = canvas * (0.5 + np.asarray(pose.shift) + np.asarray(pose.occluder_at))
    r = canvas * rng.uniform(0.1, 0.18)
    if pose.occluder == "blade":  # a grass blade across the leaf
        a = rng.uniform(0, np.pi)
        dx, dy = np.cos(a) * canvas, np.sin(a) * canvas
        draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=(86, 128, 52), width=max(2, int(canvas * 0.05)))
    elif pose.occluder == "stone":
        grey = tuple(int(v) for v in rng.integers(100, 160, 3))
        draw.ellipse([cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r], fill=grey)
    else:  # a finger holding the leaf, from the border
        reach = [cx, cy, cx + canvas, cy + canvas * rng.uniform(-0.5, 0.5)]
        draw.line(reach, fill=(214, 170, 140), width=int(r))


def finish(image: Image.Image, pose: Pose, size: int, rng: np.random.Generator) -> Image.Image:
    """Downsample to `size`, light, add sensor noise and blur."""
    image = image.reduce(image.width // size) if image.width != size else image
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    along = np.cos(pose.light_angle) * xx + np.sin(pose.light_angle) * yy  # (size, size) in [-0.7, 0.7]
    light = pose.brightness * (1.0 + 2.0 * pose.light_strength * along)
    noise = rng.standard_normal((size, size, 1), dtype=np.float32) * 3.0
    pixels = np.asarray(image, np.float32) * light[:, :, None] + noise
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(pose.blur)) if pose.blur > 0 else image


def render_leaf(traits: dict[str, str], pose: Pose, size: int) -> Image.Image:
    """One leaf photo `(size, size)` RGB: traits keys shape, margin, venation, colour, spots."""
    canvas = 2 * size
    # Separate streams, so that changing one trait (say, spots) leaves the rest identical.
    texture, spotting, occluding, sensor = (
        np.random.default_rng(s) for s in np.random.SeedSequence(pose.texture_seed).spawn(4)
    )
    image = background(pose.background, canvas, texture)
    outline = toothed_outline(traits["shape"], traits["margin"])
    polygon = _to_canvas(outline, pose, canvas).ravel().tolist()  # flat x0, y0, x1, ...
    blade, vein = _leaf_colours(traits["colour"], pose)
    mask = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(mask).polygon(polygon, fill=255)
    layer = Image.new("RGB", (canvas, canvas), blade)
    draw = ImageDraw.Draw(layer)
    leaf_px = pose.scale * canvas  # one leaf unit in canvas pixels
    for index, line in enumerate(veins(outline, traits["venation"])):
        width = max(1, int(round(leaf_px * (0.05 if index == 0 else 0.028))))
        draw.line(_to_canvas(line, pose, canvas).ravel().tolist(), fill=vein, width=width)
    _draw_spots(draw, np.asarray(mask) > 0, traits["spots"], leaf_px, spotting)
    petiole = _to_canvas(np.array([[0.0, 0.95], [0.0, 1.35]]), pose, canvas)
    ImageDraw.Draw(image).line(petiole.ravel().tolist(), fill=vein, width=max(1, int(leaf_px * 0.05)))
    image.paste(layer, mask=mask)
    _draw_occluder(ImageDraw.Draw(image), pose, canvas, occluding)
    return finish(image, pose, size, sensor)
