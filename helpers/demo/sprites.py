"""The pixel-art monster rasteriser: body shapes, poses per action, palettes, and :func:`render_sprite`.

Sprites are drawn on a 32x32 grid and upscaled with nearest neighbour, so they look like pixel art:
each part (ellipse, rectangle, polygon, thick segment) is tested at the pixel centres in the monster's own
coordinates, the pose (lean, squash, offset) maps the grid into those coordinates, and a dark outline and a
two-tone shading are added at the end. What a monster is (its colour, shape and features) and how it is described
is :class:`helpers.demo.species.Species`; this module only draws it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .species import ACTIONS, COLOURS, Species



# ----------------------------------------------------------------------------------------------------- poses
@dataclass(frozen=True)
class Pose:
    """How one frame is posed. Angles in degrees; the monster faces right (+x), y points down."""

    dx: float = 0.0  # offset of the whole monster on the grid
    dy: float = 0.0  # negative = up
    lean: float = 0.0  # rotation on the front (lean > 0, forward) or back foot (lean < 0, backward)
    sx: float = 1.0  # squash/stretch about the feet
    sy: float = 1.0
    legs: float = 0.0  # walk cycle in [-1, 1]: +1 front leg forward, -1 back leg forward
    step: float = 0.0  # walk cycle in [-1, 1]: +1 front foot lifted, -1 back foot lifted
    tuck: float = 0.0  # legs pulled up in [0, 1] (jump)
    arm: float = 20.0  # direction of the front arm: 0 = down, 90 = forward, 180 = up, -90 = back
    weapon: float = 150.0  # direction of a held weapon, same convention
    wings: float = 0.0  # wing flap in [-1, 1]: down .. up
    mouth: bool = False  # open mouth
    eyes: str = "open"  # "open", "closed" or "hurt"
    flash: float = 0.0  # mix towards white (hurt)
    effect: str = ""  # "slash" (attack), "stars" (hurt) or ""
    phase: float = 0.0  # 0..1 through the action (varies small details of effects)
    shadow: float = 1.0  # width of the ground shadow (narrower when the monster is in the air)


def action_pose(action: str, frame: int, n_frames: int) -> Pose:
    """The pose of ``frame`` (0-based) out of ``n_frames`` of ``action``."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; the actions are {', '.join(ACTIONS)}")
    t = frame / n_frames  # cyclic phase in [0, 1)
    u = frame / (n_frames - 1) if n_frames > 1 else 0.0  # progress in [0, 1] (one-shot actions)
    cyc = math.cos(2 * math.pi * t)
    sin = math.sin(2 * math.pi * t)
    if action == "idle":  # upright, breathing, blinks on the last frame
        breath = (1 - cyc) / 2
        return Pose(sy=1 - 0.06 * breath, sx=1 + 0.04 * breath, arm=20 + 6 * breath, wings=-0.2 + 0.3 * breath,
                    eyes="closed" if n_frames > 2 and frame == n_frames - 1 else "open", phase=t)
    if action == "walk":  # legs swing and lift in turn, the body bobs and sways
        return Pose(dx=round(sin), dy=-round(abs(sin)), lean=4.0, legs=cyc, step=sin, arm=20 + 15 * cyc,
                    weapon=150 - 10 * cyc, wings=0.6 * cyc, phase=t)
    if action == "attack":  # lunge forward, the weapon (or arm) swings from behind the head to the front
        return Pose(dx=0.5 + 1.0 * u, lean=4.0 + 4.0 * u, legs=0.6, arm=-140 + 170 * u, weapon=200 - 150 * u,
                    wings=0.7, mouth=True, effect="slash" if u >= 0.5 else "", phase=u)
    if action == "hurt":  # recoil backwards, flashing, eyes squeezed shut
        return Pose(dx=-0.5, lean=-6.0 - 4.0 * u, legs=-0.5, arm=-60, weapon=210, wings=0.0,
                    mouth=True, eyes="hurt", flash=0.3 if frame % 2 == 0 else 0.0, effect="stars", phase=u)
    rising = frame < n_frames / 2  # jump: stretched on the way up, squashed on the way down, legs tucked
    height = 2.0 + 2.0 * math.sin(math.pi * (frame + 0.5) / n_frames)
    return Pose(dy=-round(height), sx=0.94 if rising else 1.06, sy=1.05 if rising else 0.94, tuck=1.0,
                arm=-130 if rising else -100, weapon=110, wings=1.0 if rising else -0.6, mouth=not rising,
                phase=u, shadow=0.6)


# ------------------------------------------------------------------------------------------------ rasteriser
GRID = 32  # sprites are drawn on this grid, then upscaled with nearest neighbour
_FEET = (16.0, 29.0)  # where the monster's feet touch the ground, in grid pixels

# colour roles of the pixels (the palette turns them into RGBA)
(EMPTY, SHADOW, BODY, DARK, LIGHT, EYE, PUPIL, MOUTH, HORN, METAL, WOOD, GOLD, BEAK, EFFECT,
 SHADE, SHINE, OUTLINE) = range(17)
_OUTLINE_RGB = (22, 18, 30)


def _palette(colour: str, flash: float) -> np.ndarray:
    """RGBA colour of every role for one species (row = role)."""
    base = np.array(COLOURS[colour], dtype=np.float64)
    white = np.full(3, 255.0)
    beak = (112, 70, 36) if colour in ("orange", "yellow") else (250, 168, 40)
    rgb = {
        BODY: base, DARK: base * 0.6, LIGHT: base + (white - base) * 0.45, EYE: (250, 248, 236),
        PUPIL: _OUTLINE_RGB, MOUTH: (112, 24, 40), HORN: (228, 210, 166), METAL: (186, 196, 212),
        WOOD: (132, 84, 44), GOLD: (246, 196, 36), BEAK: beak, EFFECT: (255, 238, 120),
        SHADE: base * 0.7, SHINE: base + (white - base) * 0.35, OUTLINE: _OUTLINE_RGB,
    }
    pal = np.zeros((17, 4), dtype=np.float64)
    for role, value in rgb.items():
        pal[role, :3] = value
        pal[role, 3] = 255
    if flash:
        pal[BODY:OUTLINE, :3] += (255 - pal[BODY:OUTLINE, :3]) * flash
    pal[SHADOW] = (0, 0, 0, 64)
    return np.round(pal).astype(np.uint8)


def _ellipse(x, y, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def _rect(x, y, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def _segment(x, y, p: tuple[float, float], q: tuple[float, float], r: float) -> np.ndarray:
    """A thick line (capsule) from ``p`` to ``q`` with radius ``r``."""
    px, py = p
    vx, vy = q[0] - px, q[1] - py
    t = np.clip(((x - px) * vx + (y - py) * vy) / max(vx * vx + vy * vy, 1e-9), 0.0, 1.0)
    return (x - px - t * vx) ** 2 + (y - py - t * vy) ** 2 <= r * r


def _polygon(x, y, pts: Sequence[tuple[float, float]]) -> np.ndarray:
    """Inside test (even-odd rule) of a polygon given by its corners."""
    inside = np.zeros(np.shape(x), dtype=bool)
    for (x0, y0), (x1, y1) in zip(pts, [*pts[1:], pts[0]]):
        if y0 == y1:
            continue
        crosses = (y0 > y) != (y1 > y)
        x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < x_at)
    return inside


def _rotate(pts: Sequence[tuple[float, float]], pivot: tuple[float, float], deg: float) -> list[tuple[float, float]]:
    """Points rotated by ``deg`` about ``pivot`` (positive = clockwise on screen)."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return [(pivot[0] + c * (px - pivot[0]) - s * (py - pivot[1]), pivot[1] + s * (px - pivot[0]) + c * (py - pivot[1]))
            for px, py in pts]


def _towards(p: tuple[float, float], deg: float, length: float) -> tuple[float, float]:
    """The point ``length`` away from ``p`` in direction ``deg`` (0 = down, 90 = forward, 180 = up)."""
    return p[0] + length * math.sin(math.radians(deg)), p[1] + length * math.cos(math.radians(deg))


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[y, x] = mask[y + dy, x + dx]`` (False outside the grid)."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
        mask[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
    return out


class _Canvas:
    """A grid of colour roles. ``x``, ``y`` are the pixel centres in the monster's own coordinates (origin between
    its feet, facing +x, y down), so parts are drawn once and the pose moves, leans and squashes them."""

    def __init__(self, pose: Pose):
        ys, xs = np.mgrid[0:GRID, 0:GRID].astype(np.float64) + 0.5
        self.gx, self.gy = xs, ys  # grid coordinates (effects and the shadow are drawn there)
        pivot = math.copysign(6.0, pose.lean)  # rock on the front foot (lean forward) or the back one
        u, v = xs - _FEET[0] - pose.dx - pivot, ys - _FEET[1] - pose.dy
        c, s = math.cos(math.radians(pose.lean)), math.sin(math.radians(pose.lean))
        self.x, self.y = (c * u + s * v + pivot) / pose.sx, (-s * u + c * v) / pose.sy
        self.roles = np.zeros((GRID, GRID), dtype=np.uint8)
        self.pose = pose

    def paint(self, mask: np.ndarray, role: int) -> np.ndarray:
        self.roles[mask] = role
        return mask

    def ellipse(self, role: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return self.paint(_ellipse(self.x, self.y, cx, cy, rx, ry), role)

    def rect(self, role: int, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return self.paint(_rect(self.x, self.y, x0, y0, x1, y1), role)

    def segment(self, role: int, p: tuple[float, float], q: tuple[float, float], r: float) -> np.ndarray:
        return self.paint(_segment(self.x, self.y, p, q, r), role)

    def polygon(self, role: int, pts: Sequence[tuple[float, float]]) -> np.ndarray:
        return self.paint(_polygon(self.x, self.y, pts), role)

    def finish(self, palette: np.ndarray) -> np.ndarray:
        """Shade the body (light from the top left), add the outline, and look up the colours: [G, G, 4] uint8."""
        roles = self.roles
        body = roles == BODY
        shade = body & ~(_shift(body, 1, 0) & _shift(body, 0, 1))  # bottom and right rims
        shine = body & ~_shift(body, -1, 0) & _shift(body, 1, 0) & ~shade  # top rim
        roles[shade] = SHADE
        roles[shine] = SHINE
        solid = (roles != EMPTY) & (roles != SHADOW)
        inked = solid & (roles != PUPIL)  # dark lines (legs, pupils) are outlines already
        near = _shift(inked, 1, 0) | _shift(inked, -1, 0) | _shift(inked, 0, 1) | _shift(inked, 0, -1)
        roles[near & ~solid] = OUTLINE
        return palette[roles]


# ------------------------------------------------------------------------------------------------ features
def _eyes(c: _Canvas, sp: Species, spots: Sequence[tuple[float, float]], big: float = 1.0) -> None:
    """Eyes (2x2 white with a pupil looking forward), or one big eye for a cyclops; closed or squeezed poses."""
    if "cyclops" in sp.features:
        cx = sum(p[0] for p in spots) / len(spots)
        cy = spots[0][1]
        spots, big = [(cx, cy)], big * 1.7
    for ex, ey in spots:
        if c.pose.eyes == "open":
            c.ellipse(EYE, ex, ey, 1.05 * big, 1.25 * big)
            c.ellipse(PUPIL, ex + 0.5 * big, ey + 0.1, 0.55 * big, 0.8 * big)
        elif c.pose.eyes == "closed":
            c.rect(PUPIL, ex - big, ey, ex + big, ey + 0.6)
        else:  # hurt: squeezed shut, a slanted stroke
            c.segment(PUPIL, (ex - big, ey - 0.8), (ex + big, ey + 0.6), 0.6)


def _mouth(c: _Canvas, x: float, y: float, w: float = 1.5) -> None:
    if c.pose.mouth:
        c.ellipse(MOUTH, x, y, w, 1.3)
    else:
        c.rect(PUPIL, x - w, y - 0.2, x + w, y + 0.4)


def _headwear(c: _Canvas, sp: Species, top: tuple[float, float], half_width: float) -> None:
    """Horns, a single horn or a crown on top of the head at ``top``."""
    x, y = top
    if "horns" in sp.features:
        for side in (-1, 1):
            bx = x + side * half_width * 0.6
            c.polygon(HORN, [(bx - 1.4, y + 1.2), (bx + 1.4, y + 1.2), (bx + side * 1.8, y - 3.0)])
    if "horn" in sp.features:
        c.polygon(HORN, [(x - 1.5, y + 1.2), (x + 1.5, y + 1.2), (x + 2.0, y - 3.6)])
    if "crown" in sp.features:
        c.rect(GOLD, x - 3.2, y - 1.0, x + 3.2, y + 0.8)
        for px in (x - 3.0, x, x + 3.0):
            c.polygon(GOLD, [(px - 1.2, y - 0.6), (px + 1.2, y - 0.6), (px, y - 3.0)])


def _bat_wings(c: _Canvas, pivot: tuple[float, float], size: float, role: int = DARK, mirror: bool = False) -> None:
    """A webbed wing growing back and up from ``pivot``; flaps with the pose (drawn behind the body)."""
    px, py = pivot
    d = -1 if not mirror else 1
    pts = [(px, py + 1), (px + d * 3.5 * size, py - 5 * size), (px + d * 8 * size, py - 6 * size),
           (px + d * 7 * size, py - 2 * size), (px + d * 5.5 * size, py - 3 * size), (px + d * 4.5 * size, py),
           (px + d * 2.5 * size, py - 1.5 * size)]
    c.polygon(role, _rotate(pts, pivot, -d * 30 * c.pose.wings))


def _spots(c: _Canvas, sp: Species, centres: Sequence[tuple[float, float]]) -> None:
    if "spots" in sp.features:
        for sx, sy in centres:
            m = _ellipse(c.x, c.y, sx, sy, 1.2, 1.0) & (c.roles == BODY)
            c.paint(m, DARK)


def _arm_and_weapon(c: _Canvas, sp: Species, shoulder: tuple[float, float], length: float, r: float,
                    role: int = BODY, reach: float = 1.0) -> None:
    """The front arm (pointing at ``pose.arm``) and, for armed species, the weapon (``reach`` x its length)."""
    hand, w = _towards(shoulder, c.pose.arm, length), c.pose.weapon
    if "sword" in sp.features:
        c.segment(METAL, hand, _towards(hand, w, 6.5 * reach), 0.8)
        guard = _towards(hand, w, 1.6)
        c.segment(GOLD, _towards(guard, w + 90, 1.8), _towards(guard, w - 90, 1.8), 0.6)
    if "club" in sp.features:
        head = _towards(hand, w, 2.5 * reach)
        c.segment(WOOD, hand, head, 0.8)
        c.segment(WOOD, head, _towards(hand, w, 5.5 * reach), 1.6)
    c.segment(role, shoulder, hand, r)
    c.ellipse(role, hand[0], hand[1], r + 0.4, r + 0.4)


def _leg_offsets(pose: Pose, side: int) -> tuple[float, float]:
    """Foot (x shift, lift) of the front (+1) or back (-1) leg for the walk cycle and the jump tuck."""
    return 1.6 * pose.legs * side, 1.5 * max(0.0, pose.step * side) + 1.5 * pose.tuck


# -------------------------------------------------------------------------------------- anatomy, per shape
# Each function draws one body shape back to front in the monster's coordinates: feet at y = 0, facing +x,
# within about x in [-12, 12] and y >= -21 (plus headwear), so every pose stays inside the 32 px grid.
def _draw_slime(c: _Canvas, sp: Species) -> None:
    if "wings" in sp.features:
        _bat_wings(c, (-4.5, -8.5), 0.75)
    squash = 0.1 * c.pose.legs  # a slime "walks" by squashing and stretching
    c.paint(_ellipse(c.x, c.y, 0, 0, 9.5 * (1 + squash), 12 * (1 - squash)) & (c.y <= 0), BODY)
    top = -12 * (1 - squash)
    c.ellipse(LIGHT, -4, top + 4, 2, 1.2)
    _spots(c, sp, [(-5, -4), (-1, -9), (-7, -8), (2, -2)])
    _eyes(c, sp, [(3, top + 5), (7, top + 5)])
    _mouth(c, 5, top + 9)
    _headwear(c, sp, (1, top + 0.5), 6)


def _draw_golem(c: _Canvas, sp: Species) -> None:
    for side, role in ((-1, DARK), (1, BODY)):  # stubby stone legs
        shift, lift = _leg_offsets(c.pose, side)
        x = side * 3.0 + shift
        c.rect(role, x - 2.5, -6 - lift, x + 2.5, -lift)
    c.segment(DARK, (-6, -13), _towards((-6, -13), 10 - 0.3 * c.pose.arm, 6), 2.2)  # back arm
    c.polygon(BODY, [(-8, -15), (8, -15), (8.5, -13), (7, -6), (-7, -6), (-8.5, -13)])  # broad torso
    c.rect(BODY, -2.5, -19, 4.5, -15)  # small square head
    c.rect(DARK, -2.5, -15.2, 4.5, -14.6)  # the seam between head and torso
    for p, q in (((-5, -13), (-3, -10)), ((-3, -10), (-4, -8)), ((2, -9), (5, -8))):  # cracks in the stone
        c.segment(DARK, p, q, 0.5)
    _spots(c, sp, [(-5, -8), (4, -13)])
    _eyes(c, sp, [(1, -17.5), (3.5, -17.5)], big=0.8)
    _headwear(c, sp, (1, -19), 4)
    _arm_and_weapon(c, sp, (4.5, -13), 4.5, 2.2, reach=0.9)


def _draw_ghost(c: _Canvas, sp: Species) -> None:
    y0 = -1.5 - (1 - abs(c.pose.legs))  # floats above the ground and bobs
    wave = 1.5 * c.pose.legs
    c.segment(DARK, (-5, y0 - 9), _towards((-5, y0 - 9), 40 - 0.3 * c.pose.arm, 4), 1.4)
    body = _ellipse(c.x, c.y, 0, y0 - 10, 7.5, 7) | _rect(c.x, c.y, -7.5, y0 - 10, 7.5, y0 - 3)
    for k in range(-1, 3):  # the wavy hem
        body |= _ellipse(c.x, c.y, -7.5 + 5 * k + wave + 2.5, y0 - 3, 2.5, 2.4)
    c.paint(body & (np.abs(c.x) <= 7.5), BODY)
    _spots(c, sp, [(-4, y0 - 6), (-2, y0 - 14)])
    _eyes(c, sp, [(1.5, y0 - 12), (5, y0 - 12)], big=1.1)
    _mouth(c, 3.5, y0 - 7.5, 1.2)
    _headwear(c, sp, (0.5, y0 - 16.5), 6)
    _arm_and_weapon(c, sp, (5.5, y0 - 8), 4, 1.4, reach=0.8)


def _draw_bird(c: _Canvas, sp: Species) -> None:
    for side in (-1, 1):
        shift, lift = _leg_offsets(c.pose, side)
        hip = (side * 1.5, -5.0)
        c.segment(BEAK, hip, (hip[0] + shift, -lift), 0.55)
        c.rect(BEAK, hip[0] + shift, -lift - 0.8, hip[0] + shift + 2.2, -lift)
    c.polygon(DARK, [(-6, -10), (-10, -13), (-9.5, -10), (-10.5, -7), (-6, -7)])  # tail feathers
    c.ellipse(BODY, -1, -9, 6.5, 5.5)
    c.ellipse(BODY, 3.5, -14.5, 4.5, 4.5)
    c.ellipse(LIGHT, 1.5, -7, 4, 3)
    _spots(c, sp, [(-4, -11), (-1, -12)])
    wing = [(-4, -12), (2, -12), (1, -8), (-3, -6), (-7, -7)]
    c.polygon(DARK, _rotate(wing, (-1, -11), -60 * max(0.0, c.pose.wings) + 10 * min(0.0, c.pose.wings)))
    gape = 1.2 if c.pose.mouth else 0.0
    c.polygon(BEAK, [(7, -16), (11, -15 + 0.5 * gape), (7, -13.5)])
    if gape:
        c.polygon(BEAK, [(7, -13), (10, -12), (7, -12)])
    _eyes(c, sp, [(4.5, -16)])
    _headwear(c, sp, (3, -19), 4)


def _draw_spider(c: _Canvas, sp: Species) -> None:
    """Seen from the front: a round body, a small head with fangs, four thin bent legs on each side."""
    if "wings" in sp.features:
        _bat_wings(c, (-3, -11), 0.8)
        _bat_wings(c, (3, -11), 0.8, mirror=True)
    for side in (-1, 1):
        for k in range(4):
            shift, lift = _leg_offsets(c.pose, side * (1 if k % 2 else -1))
            a = math.radians(30 + 18 * k)
            knee = (side * 9.5 * math.sin(a), -8 - 9.5 * math.cos(a) + 1.5 * c.pose.tuck)
            foot = (side * (5.5 + 2 * k) + 0.5 * shift, -0.5 - 0.8 * lift)
            c.segment(PUPIL, (side * 2, -8), knee, 0.55)  # thin dark lines: no outline of their own
            c.segment(PUPIL, knee, foot, 0.55)
    c.ellipse(BODY, 0, -9.5, 5.5, 5)  # abdomen
    c.ellipse(BODY, 0.5, -4.8, 3.5, 2.6)  # head
    c.ellipse(LIGHT, -2, -12, 2, 1)
    _spots(c, sp, [(-2.5, -9), (2, -11)])
    _eyes(c, sp, [(-1, -5.5), (2, -5.5)], big=0.8)
    for fx in (-0.5, 1.5):
        c.segment(HORN, (fx, -2.8), (fx, -1.6 + (0.6 if c.pose.mouth else 0)), 0.5)  # fangs
    _headwear(c, sp, (0, -14), 4)


def _draw_mushroom(c: _Canvas, sp: Species) -> None:
    if "wings" in sp.features:
        _bat_wings(c, (-4, -14), 0.75)
    for side in (-1, 1):
        shift, lift = _leg_offsets(c.pose, side)
        c.ellipse(DARK if side < 0 else LIGHT, side * 2.5 + shift, -1.0 - lift, 2.2, 1.5)
    c.segment(DARK, (-4, -8), _towards((-4, -8), 30 - 0.3 * c.pose.arm, 3.5), 1.2)
    c.paint(_ellipse(c.x, c.y, 0, -7, 5.5, 6.5) & (c.y <= -1.2), LIGHT)  # stem
    cap = _ellipse(c.x, c.y, 0, -10, 10.5, 8.5) & (c.y <= -9.5)
    c.paint(cap, BODY)
    for sx, sy, r in ((-5, -13, 1.6), (1, -16, 1.4), (5, -11.5, 1.3), (-1, -11.5, 1.0)):
        c.paint(_ellipse(c.x, c.y, sx, sy, r, r) & cap, LIGHT)
    _eyes(c, sp, [(0.5, -6.5), (3.5, -6.5)], big=0.9)
    _mouth(c, 2, -3.4, 1.1)
    _headwear(c, sp, (0, -18.2), 6)
    _arm_and_weapon(c, sp, (4, -7.5), 3.5, 1.2, role=LIGHT, reach=0.75)


def _draw_dragon(c: _Canvas, sp: Species) -> None:
    if "wings" in sp.features:
        _bat_wings(c, (-2, -11), 1.0)
    for side, hip_x in ((-1, -4.5), (1, 2.0)):
        for role, dxl in ((DARK, 1.5), (BODY, 0.0)):
            s = side if role == BODY else -side
            shift, lift = _leg_offsets(c.pose, s)
            c.segment(role, (hip_x + dxl, -6), (hip_x + dxl + shift, -1 - lift), 1.6)
    wag = 1.5 * c.pose.legs
    c.segment(BODY, (-5, -7), (-8, -5.5), 2.0)
    c.segment(BODY, (-8, -5.5), (-10, -8.5 - wag), 1.3)
    c.polygon(HORN, [(-10.5, -8 - wag), (-11.5, -11.5 - wag), (-9, -10 - wag)])  # tail spike
    c.ellipse(BODY, -1, -8, 6.5, 4.5)
    c.segment(BODY, (2.5, -9), (5, -13.5), 2.4)  # neck
    c.ellipse(BODY, 6, -14.5, 3.6, 3.1)
    c.ellipse(BODY, 8.3, -13.5, 2.2, 1.9)  # snout
    c.ellipse(LIGHT, 0, -5.5, 4.5, 1.6)
    for bx in (-5, -2, 1):
        c.polygon(HORN, [(bx - 1, -12), (bx + 1, -12.2), (bx - 0.5, -14.5)])  # back spikes
    _spots(c, sp, [(-3, -9), (1, -10), (-6, -7)])
    _eyes(c, sp, [(6.5, -15.5)], big=0.9)
    if c.pose.mouth:
        c.polygon(MOUTH, [(7, -12.8), (10.6, -13.2), (10.6, -12.0)])
    _headwear(c, sp, (5.5, -17.5), 3.5)


def _draw_bat(c: _Canvas, sp: Species) -> None:
    y0 = -2.5 - 1.5 * (1 - abs(c.pose.legs))  # flies and bobs
    for mirror in (False, True):
        _bat_wings(c, (-2.5 if not mirror else 2.5, y0 - 9), 0.95, role=DARK, mirror=mirror)
    c.polygon(BODY, [(-4, y0 - 11), (-4.5, y0 - 15.5), (-1.5, y0 - 13)])  # ears
    c.polygon(BODY, [(4, y0 - 11), (4.5, y0 - 15.5), (1.5, y0 - 13)])
    c.ellipse(BODY, 0, y0 - 8, 4.8, 5.2)
    c.ellipse(LIGHT, 0.5, y0 - 6, 2.5, 2.4)
    _spots(c, sp, [(-2.5, y0 - 10)])
    for fx in (-1.5, 1.5):
        c.rect(DARK, fx - 0.5, y0 - 3.5, fx + 0.5, y0 - 1.8)
    _eyes(c, sp, [(-1.5, y0 - 9.5), (2, y0 - 9.5)], big=0.9)
    if c.pose.mouth:
        c.ellipse(MOUTH, 0.5, y0 - 6.4, 1.2, 1.0)
    else:
        c.rect(HORN, -0.6, y0 - 6.5, 1.6, y0 - 5.6)  # fangs
    _headwear(c, sp, (0, y0 - 13), 5)


_DRAW = {"slime": _draw_slime, "golem": _draw_golem, "ghost": _draw_ghost, "bird": _draw_bird,
         "spider": _draw_spider, "mushroom": _draw_mushroom, "dragon": _draw_dragon, "bat": _draw_bat}


def _effects(c: _Canvas) -> None:
    """Grid-space marks that make the action readable: a slash in front (attack), stars (hurt)."""
    pose, x, y = c.pose, c.gx, c.gy
    if pose.effect == "slash":
        cx, cy = _FEET[0] + pose.dx, _FEET[1] - 11
        r = np.hypot(x - cx, y - cy)
        ang = np.degrees(np.arctan2(y - cy, x - cx))
        start = -80 + 40 * (pose.phase - 0.5)
        arc = (r >= 9.5) & (r <= 11.6 - 0.6 * pose.phase) & (ang >= start) & (ang <= start + 100)
        c.paint(arc & (c.roles == EMPTY), EFFECT)
    elif pose.effect == "stars":
        k = round(pose.phase * 3)  # the stars circle a little from frame to frame
        for sx, sy in ((_FEET[0] + 8 - k, 6 + (k % 2)), (_FEET[0] - 9 + k, 9 - (k % 2))):
            plus = _rect(x, y, sx - 1.6, sy - 0.5, sx + 1.6, sy + 0.5) | _rect(x, y, sx - 0.5, sy - 1.6, sx + 0.5,
                                                                                sy + 1.6)
            c.paint(plus & (c.roles == EMPTY), EFFECT)


def render_sprite(species: Species, action: str, frame: int, n_frames: int, size: int = 64) -> Image.Image:
    """One RGBA sprite (``size`` x ``size``, transparent background) of ``species`` doing ``action``."""
    pose = action_pose(action, frame, n_frames)
    c = _Canvas(pose)
    shadow = _ellipse(c.gx, c.gy, _FEET[0] + pose.dx * 0.5, _FEET[1] + 0.5, 7.5 * pose.shadow, 1.2)
    c.paint(shadow, SHADOW)
    _DRAW[species.shape](c, species)
    _effects(c)
    rgba = c.finish(_palette(species.colour, pose.flash))
    if size % GRID == 0:
        k = size // GRID
        return Image.fromarray(np.ascontiguousarray(rgba.repeat(k, axis=0).repeat(k, axis=1)), "RGBA")
    return Image.fromarray(rgba, "RGBA").resize((size, size), Image.Resampling.NEAREST)
