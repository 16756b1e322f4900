"""The built-in dataset: procedurally drawn "moving digits" (Moving-MNIST-like), written as real MP4 files.

One or two white digit glyphs on black move at constant velocity and bounce off the frame edges. Every
video is generated from its own seed (seed, split, index), so the files do not depend on how many are made.
Layout: <out>/train/<digit>/00000.mp4 and <out>/test/<digit>/..., the class being the first digit.

Beside each video, its actions: `00000.actions.npy`, float32 (n_frames, 2 * max_digits), row t holding
each digit's velocity (dy, dx) in pixels per frame at the written resolution as it leaves frame t, i.e.
the motion from frame t to frame t+1 (after a bounce, the reflected velocity; zeros for digits a video
does not have). This is the sidecar format preprocess reads beside any video (videogpt/data/sources.py).
"""
from __future__ import annotations

import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from videogpt.config import DefaultDataParams
from videogpt.data.ffmpeg_io import write_mp4
from videogpt.data.sources import ACTION_SUFFIXES, SPLITS

SPEED = (0.05, 0.08)  # pixels per frame as a fraction of the frame size: 3-5 pixels per frame at 64 px


@lru_cache(maxsize=None)
def glyph(digit: int, height: int) -> np.ndarray:
    """A bold anti-aliased digit, float32 in [0, 1], `height` pixels tall and cropped to its ink."""
    # Draw large, then shrink: Pillow's built-in font is thin, and scaling down makes clean strokes
    # whatever font Pillow falls back to.
    size = 4 * height
    font = ImageFont.load_default(size=size)
    canvas = Image.new("L", (2 * size, 2 * size))
    ImageDraw.Draw(canvas).text((size // 2, size // 2), str(digit), fill=255, font=font,
                                stroke_width=max(1, size // 12), stroke_fill=255)
    canvas = canvas.crop(canvas.getbbox())
    width = max(1, round(canvas.width * height / canvas.height))
    return np.asarray(canvas.resize((width, height), Image.LANCZOS), np.float32) / 255


def _trajectory(rng: np.random.Generator, n_frames: int, room: tuple[int, int], speed: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (n_frames, 2) as (y, x) of a point moving in a straight line, reflected at the walls,
    and its velocity (n_frames, 2) as it leaves each frame, in pixels per frame."""
    position = rng.uniform(0, 1, 2) * room
    angle = rng.uniform(0, 2 * np.pi)
    velocity = speed * np.array([np.sin(angle), np.cos(angle)])
    corners, velocities = np.empty((n_frames, 2)), np.empty((n_frames, 2))
    for t in range(n_frames):
        corners[t], velocities[t] = position, velocity
        position = position + velocity
        for axis in range(2):  # bounce: mirror the overshoot back inside and reverse that component
            if position[axis] < 0:
                position[axis], velocity[axis] = -position[axis], -velocity[axis]
            elif position[axis] > room[axis]:
                position[axis], velocity[axis] = 2 * room[axis] - position[axis], -velocity[axis]
        position = np.clip(position, 0, room)  # a step longer than the room would overshoot the other wall
    return np.rint(corners).astype(int), velocities


def make_video_and_actions(digits: list[int], params: DefaultDataParams, rng: np.random.Generator
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(n_frames, R, R, 3) uint8 with the given digits moving independently (overlaps take the max), and
    the actions (n_frames, 2 * max_digits) float32: each digit's velocity (dy, dx) leaving each frame."""
    size = params.resolution
    height = min(params.digit_size, size)
    frames = np.zeros((params.n_frames, size, size), np.float32)
    actions = np.zeros((params.n_frames, 2 * params.max_digits), np.float32)
    for i, digit in enumerate(digits):
        g = glyph(digit, height)
        room = (size - g.shape[0], size - g.shape[1])
        speed = rng.uniform(*SPEED) * size
        corners, actions[:, 2 * i:2 * i + 2] = _trajectory(rng, params.n_frames, room, speed)
        for frame, (y, x) in zip(frames, corners):
            region = frame[y:y + g.shape[0], x:x + g.shape[1]]
            np.maximum(region, g, out=region)
    gray = np.rint(frames * 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1), actions


def make_video(digits: list[int], params: DefaultDataParams, rng: np.random.Generator) -> np.ndarray:
    """The frames of `make_video_and_actions`."""
    return make_video_and_actions(digits, params, rng)[0]


def video_digits(params: DefaultDataParams, split: str, index: int) -> tuple[list[int], np.random.Generator]:
    """The digits of one video and the generator that draws its motion. Classes are balanced (index % 10)."""
    rng = np.random.default_rng([params.seed, SPLITS.index(split), index])
    n_digits = int(rng.integers(1, params.max_digits + 1))
    digits = [index % 10] + [int(d) for d in rng.integers(0, 10, n_digits - 1)]
    return digits, rng


def write_moving_digits(out_dir: str | Path, params: DefaultDataParams) -> dict[str, int]:
    """Write the whole dataset into `out_dir`, atomically (built beside it, then renamed). Returns counts."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # leftover of an interrupted run
    counts = {"train": params.n_train, "test": params.n_test}
    for split, count in counts.items():
        for index in range(count):
            digits, rng = video_digits(params, split, index)
            frames, actions = make_video_and_actions(digits, params, rng)
            video = tmp / split / str(digits[0]) / f"{index:05d}.mp4"
            write_mp4(video, frames, params.fps)
            np.save(video.with_suffix(ACTION_SUFFIXES[0]), actions)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return counts
