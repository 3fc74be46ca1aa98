"""Stick-figure kinematics and drawing for the synthetic demo dataset.

A pose lives in *figure units*: x points the way the figure faces, y points up, the
ground is ``y = 0`` and a figure standing upright is about 1 unit tall. ``pose``
returns a ``(J, 2) float64`` array of joint positions in the order of ``JOINTS``.
Side-view actions put both shoulders (and both hips) on one point; front-view
actions (wave, clap, jump) spread them apart.

Two facts the dataset is built on are plain identities here, exact to the bit:
a time-reversed class is its partner played backwards
(``pose("stand_up", t, m) == pose("sit_down", 1 - t, m)``), and a same-motion
class moves exactly like its partner (``pose("shoot_ball", t, m) ==
pose("throw", t, m)``); only the scene's static prop tells those two apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

JOINTS = ("head", "neck", "pelvis", "shoulder_a", "elbow_a", "hand_a", "shoulder_b", "elbow_b",
          "hand_b", "hip_a", "knee_a", "foot_a", "hip_b", "knee_b", "foot_b")  # a: near side, b: far
HEAD_R, NECK, TORSO = 0.075, 0.115, 0.29  # head radius, neck-to-head-centre, pelvis-to-neck
UPPER_ARM, FOREARM, THIGH, SHIN = 0.165, 0.155, 0.245, 0.245
SHOULDER_W, HIP_W = 0.085, 0.05  # half widths in a front view
STAND = THIGH + SHIN  # pelvis height of a figure standing straight
BOX = (0.09, 0.075)  # half width, half height of the box of pick_up / put_down
SEAT, SEAT_BACK = 0.18, 0.28  # pelvis height and backward shift of the seated end of sit_down

Limb = tuple  # ("fk", angle, bend) or ("ik", target x + 1j * y, elbow/knee side +1 | -1)


@dataclass(frozen=True)
class Motion:
    """Per-video random motion parameters; the same distribution for paired classes."""

    seconds: float  # video length that normalised time t in [0, 1] spans
    speed: float  # cycles per second (cyclic actions) or action progress per second (one-shot)
    phase: float  # cycle position at t = 0, in cycles
    start: float  # action progress at t = 0 (one-shot actions)
    span: float  # action progress covered by the whole video (one-shot actions)
    amp: float  # amplitude factor of the motion
    style: tuple[float, ...]  # six per-video posture offsets in [-1, 1]


def _dir(phi: float) -> complex:
    """Unit vector at angle ``phi`` from straight down, turning towards +x (forward)."""
    return complex(math.sin(phi), -math.cos(phi))


def _ik(root: complex, target: complex, l1: float, l2: float, side: float) -> tuple[complex, complex]:
    """Two-bone chain from ``root`` reaching for ``target`` (as far as it can).

    ``side`` +1 puts the middle joint to the left of the root-to-target direction
    (a knee in front of a leg pointing down), -1 to the right.
    """
    d = target - root
    dist = max(abs(d), 1e-9)
    u = d / dist
    reach = min(max(dist, abs(l1 - l2) + 1e-9), (l1 + l2) * (1 - 1e-9))
    a = (l1 * l1 - l2 * l2 + reach * reach) / (2 * reach)
    h = math.sqrt(max(l1 * l1 - a * a, 0.0))
    return root + (a + side * h * 1j) * u, root + reach * u


def _limb(root: complex, spec: Limb, l1: float, l2: float) -> tuple[complex, complex]:
    """Middle and end joint of a limb given by angles (``fk``) or by a target (``ik``)."""
    kind, a, b = spec
    if kind == "ik":
        return _ik(root, a, l1, l2, b)
    mid = root + l1 * _dir(a)
    return mid, mid + l2 * _dir(a + b)


def _figure(pelvis: complex, lean: float, arm_a: Limb, arm_b: Limb, leg_a: Limb, leg_b: Limb,
            width: float = 0.0, ground: bool = True) -> np.ndarray:
    """Assemble a ``(J, 2)`` pose; ``lean`` tilts the torso forward (rad), ``width`` 1 = front view.

    Points are complex numbers ``x + 1j * y`` inside (plain Python scalars are fast).
    """
    up = complex(math.sin(lean), math.cos(lean))
    side = -1j * up  # to the right of "up": +x for an upright figure
    neck = pelvis + TORSO * up
    sh_a, sh_b = neck + width * SHOULDER_W * side, neck - width * SHOULDER_W * side
    hp_a, hp_b = pelvis + width * HIP_W * side, pelvis - width * HIP_W * side
    ea, ha = _limb(sh_a, arm_a, UPPER_ARM, FOREARM)
    eb, hb = _limb(sh_b, arm_b, UPPER_ARM, FOREARM)
    ka, fa = _limb(hp_a, leg_a, THIGH, SHIN)
    kb, fb = _limb(hp_b, leg_b, THIGH, SHIN)
    lift = min(fa.imag, fb.imag) if ground else 0.0
    pts = (neck + NECK * up, neck, pelvis, sh_a, ea, ha, sh_b, eb, hb, hp_a, ka, fa, hp_b, kb, fb)
    return np.array([(p.real, p.imag - lift) for p in pts])


def _bump(x: float, centre: float, width: float) -> float:
    """Periodic Gaussian bump over cycles ``x`` (1 at ``centre``)."""
    d = (x - centre + 0.5) % 1.0 - 0.5
    return math.exp(-((d / width) ** 2))


def _sit(u: float, m: Motion) -> np.ndarray:
    """sit_down at progress u: 0 standing, 1 seated on the stool (``props`` draws it)."""
    s = m.style
    seat, back = SEAT + 0.03 * s[0], SEAT_BACK + 0.03 * s[1]
    bell = math.sin(math.pi * u)
    lean = (0.75 + 0.1 * s[2]) * m.amp * bell + 0.1 * u
    # arms come forward for balance while the weight goes back, then rest on the knees
    reach = (0.9 + 0.15 * s[3]) * m.amp * bell + 0.6 * u
    arm_a, arm_b = ("fk", 0.05 + reach, 0.2 + 0.4 * u), ("fk", reach, 0.2 + 0.4 * u)
    feet = ("ik", complex(0.02, 0.0), 1.0), ("ik", complex(-0.02, 0.0), 1.0)
    pelvis = complex(-back * u, STAND - (STAND - seat) * u)
    return _figure(pelvis, lean, arm_a, arm_b, *feet, ground=False)


def _pick(u: float, m: Motion) -> np.ndarray:
    """pick_up at progress u: squat over the box on the floor (0), stand holding it at the
    chest (0.55), lift it overhead (1)."""
    s = m.style
    v, w = min(u / 0.55, 1.0), max((u - 0.55) / 0.45, 0.0)
    lean = (1.2 + 0.1 * s[1]) * (1.0 - v) ** 1.3 + 0.04 - 0.08 * w
    pelvis = complex(-0.1 + 0.1 * v + 0.02 * s[0], 0.25 + 0.23 * v)
    hand = complex(0.3 + 0.02 * s[2] - 0.13 * v + 0.05 * math.sin(math.pi * v) - 0.09 * w,
                   BOX[1] + 0.015 + (0.49 + 0.03 * s[3]) * v + 0.47 * w)
    arms = ("ik", hand, -1.0), ("ik", hand + complex(-0.03, 0.01), -1.0)
    feet = ("ik", complex(0.02, 0.0), 1.0), ("ik", complex(-0.02, 0.0), 1.0)
    return _figure(pelvis, lean, *arms, *feet, ground=False)


def _throw(c: float, m: Motion) -> np.ndarray:
    """Overhand throwing, repeated: slow wind-up, fast swing over the top (cycles c)."""
    g = c + 0.6 / (2 * math.pi) * math.sin(2 * math.pi * (c - 0.65))
    phi = 0.5 - 2 * math.pi * g  # the arm turns backwards, over the top and down in front
    arm_a = ("fk", phi, -1.3 * _bump(g, 0.3, 0.15) + 0.15)
    arm_b = ("fk", 1.1 + 0.5 * m.amp * math.cos(2 * math.pi * (g - 0.3)), 0.3)
    lean = 0.1 + 0.22 * m.amp * math.cos(2 * math.pi * (g - 0.85))
    legs = ("fk", 0.32 + 0.05 * m.style[0], -0.15), ("fk", -0.3, -0.05)
    return _figure(complex(0.0, STAND), lean, arm_a, arm_b, *legs)


def _wave(c: float, m: Motion) -> np.ndarray:
    """Front view, one arm up with the forearm waving about the vertical."""
    upper = 2.45 + 0.15 * m.style[0]
    fore = math.pi + 0.7 * m.amp * math.sin(2 * math.pi * c)
    legs = ("fk", 0.07, 0.0), ("fk", -0.07, 0.0)
    return _figure(complex(0.0, STAND), 0.0, ("fk", upper, fore - upper), ("fk", -0.12, -0.1), *legs, width=1.0)


def _clap(c: float, m: Motion) -> np.ndarray:
    """Front view, both hands meeting in front of the chest and parting."""
    open_ = 0.5 + 0.5 * math.cos(2 * math.pi * c)
    hx, hy = 0.015 + 0.26 * m.amp * open_, 0.67 + 0.03 * m.style[0]
    arms = ("ik", complex(hx, hy), 1.0), ("ik", complex(-hx, hy), -1.0)
    legs = ("fk", 0.07, 0.0), ("fk", -0.07, 0.0)
    return _figure(complex(0.0, STAND), 0.0, *arms, *legs, width=1.0)


def _jump(c: float, m: Motion) -> np.ndarray:
    """Front view, jumping on the spot: crouch, take off with the arms up, land."""
    f = c % 1.0
    air = 0.2 * m.amp * math.sin(math.pi * (f - 0.25) / 0.6) if 0.25 <= f <= 0.85 else 0.0
    f2 = (f - 0.85) % 1.0
    crouch = 0.13 * math.sin(math.pi * f2 / 0.4) if f2 < 0.4 else 0.0
    lift = 0.5 - 0.5 * math.cos(2 * math.pi * (f - 0.05))
    arm = 0.25 + 2.5 * lift
    legs = ("ik", complex(0.08, air), 1.0), ("ik", complex(-0.08, air), -1.0)
    pelvis = complex(0.0, air + STAND - 0.005 - crouch)
    return _figure(pelvis, 0.0, ("fk", arm, 0.2), ("fk", -arm, -0.2), *legs, width=1.0, ground=False)


def _walk(c: float, m: Motion) -> np.ndarray:
    """Side view, walking forwards (legs and arms swinging in opposition)."""
    w = 2 * math.pi * c
    swing = 0.42 * m.amp * math.sin(w)
    knee_a, knee_b = 0.1 + 0.55 * max(0.0, math.cos(w)), 0.1 + 0.55 * max(0.0, -math.cos(w))
    arms = ("fk", -0.8 * swing, 0.3), ("fk", 0.8 * swing, 0.3)
    elapsed = (c - m.phase) / m.speed  # seconds since the first frame
    pelvis = complex(0.22 * elapsed, STAND)
    return _figure(pelvis, 0.06, *arms, ("fk", swing, -knee_a), ("fk", -swing, -knee_b))


def _punch_arm(e: float) -> Limb:
    """Arm from guard (fist at the chin, e = 0) to a straight thrust (e = 1)."""
    return ("fk", 1.15 + 0.4 * e, 2.2 * (1.0 - e) + 0.05)


def _punch(c: float, m: Motion) -> np.ndarray:
    """Side view, straight punches with alternating arms."""
    w = 2 * math.pi * c
    ea, eb = max(0.0, math.sin(w)) ** m.amp, max(0.0, -math.sin(w)) ** m.amp
    legs = ("fk", 0.3, -0.3), ("fk", -0.32, -0.15)
    return _figure(complex(0.0, STAND), 0.18 + 0.06 * (ea - eb), _punch_arm(ea), _punch_arm(eb), *legs)


def _kick(c: float, m: Motion) -> np.ndarray:
    """Side view, one leg swinging from behind to high in front and back."""
    b = 0.5 - 0.5 * math.cos(2 * math.pi * c)
    kick = ("fk", -0.3 + (1.85 + 0.1 * m.style[0]) * m.amp * b, -1.1 * math.sin(math.pi * b))
    arms = ("fk", -0.4 - 0.4 * b, 0.3), ("fk", 0.9 + 0.4 * b, 0.4)
    return _figure(complex(0.0, STAND), 0.05 - 0.4 * b, *arms, kick, ("fk", -0.05, -0.08))


def _pushup(c: float, m: Motion) -> np.ndarray:
    """Side view, a straight body pivoting on the toes, hands fixed on the floor."""
    alpha = 0.1 + 0.28 * m.amp * (0.5 + 0.5 * math.cos(2 * math.pi * c))  # body above horizontal
    along = complex(math.cos(alpha), math.sin(alpha))
    pelvis = complex(0.0, 0.02) + STAND * along
    mid = 0.255
    hand = complex((STAND + TORSO) * math.cos(mid), 0.02)
    leg = ("fk", alpha - math.pi / 2, 0.0)
    arms = ("ik", hand, -1.0), ("ik", hand + complex(-0.02, 0.0), -1.0)
    return _figure(pelvis, math.pi / 2 - alpha, *arms, leg, leg, ground=False)


def _climb(c: float, m: Motion) -> np.ndarray:
    """Side view, climbing the ladder in front: limbs alternate while the body rises."""
    w = 2 * math.pi * c
    py = 0.46 + 0.14 * m.amp * (c - m.phase) / m.speed
    hands = [complex(0.2, py + 0.55 + 0.1 * k * math.sin(w)) for k in (1, -1)]
    feet = [complex(0.17, py - 0.36 - 0.08 * k * math.sin(w)) for k in (1, -1)]
    return _figure(complex(0.0, py), 0.12, ("ik", hands[0], -1.0), ("ik", hands[1], -1.0),
                   ("ik", feet[0], 1.0), ("ik", feet[1], 1.0), ground=False)


# family -> (pose function, cyclic, speed range: cycles/s, or action progress/s if one-shot)
_FAMILIES: dict[str, tuple[Callable[[float, Motion], np.ndarray], bool, tuple[float, float]]] = {
    "sit": (_sit, False, (0.15, 0.21)), "pick": (_pick, False, (0.11, 0.16)),
    "throw": (_throw, True, (0.5, 0.9)), "wave": (_wave, True, (1.0, 1.8)),
    "clap": (_clap, True, (1.2, 2.0)), "jump": (_jump, True, (0.8, 1.3)),
    "walk": (_walk, True, (0.8, 1.2)), "punch": (_punch, True, (0.7, 1.2)),
    "kick": (_kick, True, (0.6, 1.0)), "pushup": (_pushup, True, (0.5, 0.9)),
    "climb": (_climb, True, (0.6, 1.0)),
}
# class -> (family, played backwards); the order is the dataset's class order
CLASS_MOTION: dict[str, tuple[str, bool]] = {
    "sit_down": ("sit", False), "stand_up": ("sit", True),
    "pick_up": ("pick", False), "put_down": ("pick", True),
    "throw": ("throw", False), "shoot_ball": ("throw", False),
    "wave": ("wave", False), "clap": ("clap", False), "jump": ("jump", False),
    "walk": ("walk", False), "punch": ("punch", False), "kick": ("kick", False),
    "pushup": ("pushup", False), "climb": ("climb", False),
}
CLASSES = tuple(CLASS_MOTION)


def _family(cls: str) -> tuple[str, bool]:
    if cls not in CLASS_MOTION:
        raise ValueError(f"class must be one of {', '.join(CLASSES)}; got {cls!r}")
    return CLASS_MOTION[cls]


def sample_motion(cls: str, rng: np.random.Generator, seconds: float) -> Motion:
    """Draw one video's motion parameters (same draws, in the same order, for every class).

    Args:
        cls: class name from ``CLASSES``.
        rng: the video's generator.
        seconds: video length.

    Returns:
        The ``Motion``; a one-shot action covers ``span`` of its progress, starting
        anywhere it can finish inside the action (no still hold at either end).

    Raises:
        ValueError: on an unknown class.
    """
    lo, hi = _FAMILIES[_family(cls)[0]][2]
    speed, phase = rng.uniform(lo, hi), rng.uniform(0.0, 1.0)
    span = min(speed * seconds, 0.9)
    start = rng.uniform(0.0, 1.0 - span)
    amp = rng.uniform(0.85, 1.15)
    style = tuple(float(v) for v in rng.uniform(-1.0, 1.0, 6))
    return Motion(float(seconds), float(speed), float(phase), float(start), float(span), float(amp), style)


def pose(cls: str, t: float, m: Motion) -> np.ndarray:
    """Joint positions of class ``cls`` at normalised video time ``t`` in [0, 1].

    Args:
        cls: class name from ``CLASSES``.
        t: 0 is the first frame, 1 the last.
        m: the video's ``Motion``.

    Returns:
        ``(J, 2) float64`` joints in figure units (order ``JOINTS``).

    Raises:
        ValueError: on an unknown class.
    """
    family, backwards = _family(cls)
    fn, cyclic, _ = _FAMILIES[family]
    if cyclic:
        return fn(m.phase + m.speed * m.seconds * t, m)
    return fn(m.start + m.span * ((1.0 - t) if backwards else t), m)


def props(cls: str, m: Motion) -> list[tuple[float, float, float, float]]:
    """Static props that belong to the figure (stool, ladder) as segments in figure units.

    Returns:
        ``(x0, y0, x1, y1)`` segments, drawn as thick lines; empty for most classes.
    """
    family = _family(cls)[0]
    if family == "sit":
        seat, back = SEAT + 0.03 * m.style[0] - 0.05, SEAT_BACK + 0.03 * m.style[1]
        x0, x1 = -back - 0.13, -back + 0.12
        return [(x0, seat, x1, seat), (x0, 0.0, x0, seat + 0.32), (x1, 0.0, x1, seat)]
    if family == "climb":
        top = 0.46 + 0.14 * m.amp * m.seconds + 0.75
        rails = [(0.22, 0.0, 0.22, top), (0.36, 0.0, 0.36, top)]
        return rails + [(0.22, y, 0.36, y) for y in np.arange(0.12, top, 0.16)]
    return []


def held_box(cls: str, joints: np.ndarray) -> tuple[float, float] | None:
    """Centre of the box carried in pick_up / put_down (figure units), else None."""
    if _family(cls)[0] != "pick":
        return None
    return float(joints[5, 0] + 0.03), float(joints[5, 1])


def _q(pts: np.ndarray) -> np.ndarray:
    """Pixel coordinates to cv2's fixed point (4 fractional bits), ``(N, 2) int32``."""
    return np.round(np.asarray(pts) * 16).astype(np.int32)


def draw_figure(img: np.ndarray, px: np.ndarray, colour, far_colour, limb: int, head: int) -> None:
    """Draw a stick figure in place, anti-aliased at sub-pixel positions.

    Args:
        img: ``(H, W, 3) uint8`` frame.
        px: ``(J, 2)`` joint positions in pixels (x right, y down).
        colour: RGB of the near limbs, torso and head; ``far_colour`` of the far limbs.
        limb: limb thickness in pixels (the torso is drawn thicker).
        head: head radius in pixels.
    """
    q = _q(px)
    far = [q[[6, 7, 8]], q[[12, 13, 14]]]
    near = [q[[12, 2, 9, 10, 11]], q[[6, 1, 3, 4, 5]]]  # hip/shoulder bars lead into the near limbs
    cv2.polylines(img, far, False, far_colour, limb, cv2.LINE_AA, 4)
    cv2.line(img, tuple(q[2]), tuple(q[1]), colour, round(limb * 1.4), cv2.LINE_AA, 4)
    cv2.circle(img, tuple(q[0]), head * 16, colour, -1, cv2.LINE_AA, 4)
    cv2.polylines(img, near, False, colour, limb, cv2.LINE_AA, 4)


def draw_segments(img: np.ndarray, segs: np.ndarray, colour, thickness: int) -> None:
    """Draw ``(N, 4)`` pixel segments ``x0, y0, x1, y1`` as thick anti-aliased lines, in place."""
    for x0, y0, x1, y1 in _q(segs):
        cv2.line(img, (int(x0), int(y0)), (int(x1), int(y1)), colour, thickness, cv2.LINE_AA, 4)


def draw_box(img: np.ndarray, centre: np.ndarray, half: np.ndarray, colour, edge) -> None:
    """Draw a filled box with an outline, in place (pixel centre and half sizes)."""
    c, h = np.asarray(centre, float), np.asarray(half, float)
    corners = _q(np.array([c - h, [c[0] + h[0], c[1] - h[1]], c + h, [c[0] - h[0], c[1] + h[1]]]))
    cv2.fillPoly(img, [corners], colour, cv2.LINE_AA, 4)
    cv2.polylines(img, [corners], True, edge, 2, cv2.LINE_AA, 4)
