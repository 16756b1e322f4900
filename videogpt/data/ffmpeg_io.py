"""ffmpeg as a subprocess: find the binary, probe a file, decode it to uint8 frames, write MP4 and GIF.

Every call is an argv list (built by ffmpeg-python, never a shell string) run with a timeout, and killed
with SIGKILL when it expires: ffmpeg traps SIGTERM and can spin forever on some corrupt inputs.
A video is a local path or a Stream (a file in object storage, a member of a tar): a Stream's bytes are
piped to ffmpeg's stdin block by block as ffmpeg reads them, never copied whole to local disk.
Decoding is strict (`-xerror -v error`): any decode error fails the file instead of yielding glitched
frames, so the clip store never holds silently damaged video.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import ffmpeg
import imageio_ffmpeg
import numpy as np

from videogpt.fileio import atomic_path
from videogpt.visualize import check_frames, encode_gif


class VideoError(Exception):
    """A file that yields no frames. `reason` is short enough to group by; `detail` is ffmpeg's own words."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason} ({detail})" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class VideoInfo:
    width: int            # coded size of the first video stream
    height: int
    fps: float | None     # the rate ffmpeg decodes at ("tbr"); None when the container does not say
    duration: float | None


@dataclass(frozen=True)
class Stream:
    """A video that is not a local file: `open()` gives a fresh binary file object (for example an fsspec
    file in a bucket) each time ffmpeg needs to read it; `name` is what messages call it."""
    open: Callable[[], BinaryIO]
    name: str

    def __str__(self) -> str:
        return self.name


def ffmpeg_exe() -> str:
    """The ffmpeg binary: $IMAGEIO_FFMPEG_EXE when set, else the static build bundled with imageio-ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def _input_url(path: str | Path) -> str:
    # "file:" stops ffmpeg from reading "a:b.mp4" as protocol "a" or "-x.mp4" as an option.
    return "file:" + str(Path(path).absolute())


def _input(video: str | Path | Stream):
    """ffmpeg-python's input node for a video and the Stream to feed to stdin (None for a local file)."""
    if isinstance(video, Stream):
        return ffmpeg.input("pipe:"), video
    return ffmpeg.input(_input_url(video)), None


def _feed(stream: Stream) -> tuple[int, threading.Thread]:
    """A pipe whose read end is for ffmpeg's stdin, filled from stream.open() by a thread, block by block
    (ffmpeg may stop reading early, e.g. once it has the header: the rest is not read)."""
    read_end, write_end = os.pipe()

    def copy():
        try:
            with stream.open() as source, open(write_end, "wb") as pipe:
                while block := source.read(1 << 20):
                    pipe.write(block)
        except (BrokenPipeError, ValueError):  # ffmpeg closed stdin: it has read what it wanted
            pass

    writer = threading.Thread(target=copy, daemon=True)
    writer.start()
    return read_end, writer


def _run(argv: list[str], timeout: float, stdin: bytes | Stream | None = None) -> tuple[bytes, str, int]:
    """Run ffmpeg; return (stdout, stderr, returncode). communicate() drains both pipes, so neither fills up.
    stdin: bytes, or a Stream copied to ffmpeg's stdin as it reads."""
    writer = None
    if isinstance(stdin, Stream):
        read_end, writer = _feed(stdin)
        proc = subprocess.Popen(argv, stdin=read_end, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.close(read_end)
        stdin = None
    else:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
        if writer is not None:
            writer.join()
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise VideoError("timeout", f"ffmpeg killed after {timeout:g} s") from None
    return out, err.decode("utf-8", errors="replace"), proc.returncode


_LOG_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)+")
_THREAD_EXIT = re.compile(r"Terminating thread with return code -?\d+ \((.*)\)")


def _error_lines(stderr: str) -> list[str]:
    """ffmpeg's messages without the parts that differ on every run ('[h264 @ 0x55d...]', error codes),
    so that equal problems read the same in rejected.csv."""
    lines = (_THREAD_EXIT.sub(r"\1", _LOG_PREFIX.sub("", line)).strip() for line in stderr.splitlines())
    return [line for line in lines if line]


def _check_readable(path: Path) -> None:
    """Reasons ffmpeg would report vaguely ('Invalid data found'), stated plainly."""
    try:
        # Non-blocking, so that a named pipe in the data folder reads as empty instead of hanging here.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            first_byte = os.read(fd, 1)
        finally:
            os.close(fd)
    except PermissionError:
        raise VideoError("unreadable: permission denied") from None
    except OSError as e:
        raise VideoError(f"unreadable: {e.strerror or e}") from None
    if not first_byte:
        raise VideoError("empty file", "0 bytes")


_STREAM = re.compile(r"^\s*Stream #\d+:\d+.*?: (Video|Audio|Subtitle|Data|Attachment): (.*)$", re.M)
_SIZE = re.compile(r", (\d+)x(\d+)[,\s\]]")
_TBR = re.compile(r"([\d.]+)(k?) tbr")
_DURATION = re.compile(r"Duration: (\d+):(\d+):([\d.]+)")


def probe(path: str | Path | Stream, timeout: float = 60.0) -> VideoInfo:
    """Size, frame rate and duration of the first video stream, parsed from `ffmpeg -i` (no ffprobe here).

    Raises VideoError: empty file, unreadable, not a video (ffmpeg cannot open it), no video stream.
    """
    if isinstance(path, Stream):
        with path.open() as f:
            if not f.read(1):
                raise VideoError("empty file", "0 bytes")
        argv = [ffmpeg_exe(), "-hide_banner", "-i", "pipe:"]
    else:
        path = Path(path)
        _check_readable(path)
        argv = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", _input_url(path)]
    # Without an output file ffmpeg prints the input header and exits 1; only the header matters.
    _, err, _ = _run(argv, timeout, stdin=path if isinstance(path, Stream) else None)
    if "Input #0" not in err:
        # The lines starting "Error opening input" are generic; the one before them says why.
        lines = [line for line in _error_lines(err) if not line.startswith("Error opening input")]
        raise VideoError("not a video", lines[-1] if lines else "ffmpeg could not open it")
    streams = _STREAM.findall(err)
    video = next((desc for kind, desc in streams if kind == "Video"), None)
    if video is None:
        kinds = sorted({kind.lower() for kind, _ in streams}) or ["none"]
        raise VideoError("no video stream", "streams: " + ", ".join(kinds))
    size = _SIZE.search(video)
    if size is None:
        raise VideoError("not a video", "no frame size in stream header: " + video[:120])
    tbr = _TBR.search(video)
    fps = float(tbr.group(1)) * (1000 if tbr.group(2) else 1) if tbr else None
    dur = _DURATION.search(err)
    duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3)) if dur else None
    return VideoInfo(int(size.group(1)), int(size.group(2)), fps, duration)


def _scale_and_crop(stream, resolution: int):
    """The one resize rule of every data.format: the short side to S (area filter: a proper average when
    shrinking), then the centre S x S square."""
    return (stream.filter("scale", resolution, resolution, force_original_aspect_ratio="increase", flags="area")
            .filter("crop", resolution, resolution))


def _check_decoded(stderr: str, returncode: int) -> None:
    """With -v error a clean decode prints nothing: any line means damaged input, even when rc is 0."""
    lines = _error_lines(stderr)
    if returncode != 0 or lines:
        last = lines[-1] if lines else f"exit code {returncode}"
        raise VideoError(f"ffmpeg: {last}", lines[0] if lines and lines[0] != last else "")


def decode_video(path: str | Path | Stream, resolution: int, fps: float | None = None,
                 timeout: float = 120.0) -> np.ndarray:
    """Decode the first video stream to (T, S, S, 3) uint8, S = resolution.

    ffmpeg scales the short side to S (area filter: a proper average when shrinking) and crops the centre
    square; `fps` resamples to a constant frame rate first. Raises VideoError on any decode error.
    The array is a read-only view of ffmpeg's output (np.array(...) it to modify it in place).
    """
    source, stdin = _input(path)
    stream = source.video
    if fps is not None:
        stream = stream.filter("fps", fps=fps)
    argv = (_scale_and_crop(stream, resolution).output("pipe:", format="rawvideo", pix_fmt="rgb24", xerror=None)
            .global_args(*(["-nostdin"] if stdin is None else []), "-hide_banner", "-v", "error")
            .compile(cmd=ffmpeg_exe()))
    out, err, returncode = _run(argv, timeout, stdin)
    _check_decoded(err, returncode)
    frame_bytes = resolution * resolution * 3
    if len(out) % frame_bytes:
        raise VideoError("ffmpeg: incomplete last frame", f"{len(out)} bytes")
    return np.frombuffer(out, np.uint8).reshape(-1, resolution, resolution, 3)


def scale_raw_frames(frames: np.ndarray, resolution: int, timeout: float = 120.0) -> np.ndarray:
    """Frames already in memory, uint8 (n, H, W, 3) of one size -> (n, S, S, 3), S = resolution, resized by
    the rule of `decode_video` (they go through ffmpeg as rawvideo rgb24). Raises VideoError if ffmpeg fails."""
    n, height, width, _ = frames.shape
    stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}")
    argv = (_scale_and_crop(stream, resolution).output("pipe:", format="rawvideo", pix_fmt="rgb24")
            .global_args("-nostdin", "-hide_banner", "-v", "error")
            .compile(cmd=ffmpeg_exe()))
    out, err, returncode = _run(argv, timeout, stdin=np.ascontiguousarray(frames).tobytes())
    lines = _error_lines(err)
    if returncode != 0 or lines:
        raise VideoError(f"ffmpeg: {lines[-1] if lines else f'exit code {returncode}'}", "scaling raw frames")
    expected = n * resolution * resolution * 3
    if len(out) != expected:
        raise VideoError("ffmpeg: wrong number of scaled frames", f"{len(out)} bytes, expected {expected}")
    return np.frombuffer(out, np.uint8).reshape(n, resolution, resolution, 3)


def distinct_source_frames(path: str | Path | Stream, limit: int | None = None, timeout: float = 120.0) -> int:
    """How many different pictures the first video stream holds, counting up to `limit` (ffmpeg is stopped
    there): every frame decoded as stored (native size, no frame-rate conversion, so a GIF's 2-second delay
    is one frame, not 200) and compared by MD5. Raises VideoError on a decode error, like decode_video."""
    streamed = isinstance(path, Stream)
    argv = [ffmpeg_exe(), *([] if streamed else ["-nostdin"]), "-hide_banner", "-v", "error", "-i",
            "pipe:" if streamed else _input_url(path), "-map", "0:v:0", "-fps_mode", "passthrough", "-xerror",
            "-f", "framemd5", "pipe:"]
    seen = set()
    # stderr goes to a file, not a pipe: undrained while stdout is read, a pipe could fill and stall ffmpeg
    with tempfile.TemporaryFile() as stderr:
        stdin = _feed(path)[0] if streamed else subprocess.DEVNULL
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=stderr)
        if streamed:
            os.close(stdin)
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            for line in proc.stdout:  # "stream, dts, pts, duration, size, md5" per frame; '#' comments
                if not line.startswith(b"#"):
                    seen.add(line.rsplit(b",", 1)[-1].strip())
                    if limit is not None and len(seen) >= limit:
                        break
        finally:
            proc.kill()  # done early, or failed: either way ffmpeg has nothing more to say
            proc.wait()
            timed_out = not watchdog.is_alive()
            watchdog.cancel()
        if limit is not None and len(seen) >= limit:
            return len(seen)
        if timed_out:
            raise VideoError("timeout", f"ffmpeg killed after {timeout:g} s")
        stderr.seek(0)
        _check_decoded(stderr.read().decode("utf-8", errors="replace"), proc.returncode)
    return len(seen)


def check_not_still(path: str | Path | Stream, frames: np.ndarray, timeout: float = 120.0) -> None:
    """Raise VideoError("a still image: 1 frame") if the file holds fewer than two distinct frames (a
    single-frame GIF, a one-frame video, a GIF repeating one picture): decoded at a constant rate it
    would become many clips of one unmoving picture.

    `frames` is the file as decode_video returned it. Any two that differ prove motion, at no cost; only
    when all are equal (rare) is the source decoded again as stored, so that a real but static-looking
    video whose small changes vanish at the training resolution is kept.
    """
    if len(frames) and np.array_equal(frames.min(axis=0), frames.max(axis=0)):
        if distinct_source_frames(path, limit=2, timeout=timeout) < 2:
            repeated = f", decoded as {len(frames)} identical frames" if len(frames) > 1 else ""
            raise VideoError("a still image: 1 frame", f"one picture in the file{repeated}")


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, crf: int = 18, timeout: float = 600.0) -> None:
    """Write uint8 frames (T, H, W, 3) as H.264/yuv420p MP4 (plays everywhere), atomically.

    yuv420p needs even sizes: odd ones get one black row/column of padding rather than losing pixels.
    crf 18 is visually lossless, so stored samples and default data keep their detail.
    """
    frames = check_frames(frames)
    _, height, width, _ = frames.shape
    stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=fps)
    if height % 2 or width % 2:
        stream = stream.filter("pad", width + width % 2, height + height % 2)
    with atomic_path(path) as tmp:
        argv = (stream.output(_input_url(tmp), format="mp4", vcodec="libx264", pix_fmt="yuv420p", crf=crf,
                              movflags="+faststart")
                .global_args("-hide_banner", "-v", "error").overwrite_output().compile(cmd=ffmpeg_exe()))
        _, err, returncode = _run(argv, timeout, stdin=frames.tobytes())
        if returncode != 0:
            lines = _error_lines(err)
            raise RuntimeError(f"{path}: ffmpeg failed to write MP4: {lines[-1] if lines else returncode}")


def write_gif(path: str | Path, frames: np.ndarray, fps: float) -> None:
    """Write uint8 frames (T, H, W, 3) as a looping GIF (`visualize.encode_gif`), atomically."""
    data = encode_gif(frames, fps)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
