"""Images per second of kerasbd's batched transforms vs a per-image OpenCV loop and albumentations.

For each pipeline and image size, the same N random images go through (a) the kerasbd transform on the whole
batch, on one thread (``workers=1``), (b) a straightforward Python loop calling the same OpenCV/NumPy operations
image by image, and (c) the equivalent albumentations composition per image (null where none exists). OpenCV runs
single-threaded (``cv2.setNumThreads(1)``) in all three so the comparison measures batching, not thread counts;
none of the columns calls BLAS. A fourth column runs the kerasbd transform with its chunks spread over
``--threads`` worker threads (the library default ``workers=None`` uses every CPU), which a per-image loop or
albumentations does not offer. The machine is shared, so each repeat times the columns back to back (interleaved) and
the table reports the median over repeats (every repeat's time is kept in the JSON); the column order rotates from
repeat to repeat, after one untimed warm-up round, because a column's speed depends on what ran just before it. Writes
benchmarks/results/transforms.json and transforms.md atomically.

    python benchmarks/transforms.py                # N = 10,000, 3 interleaved repeats (several minutes)
    python benchmarks/transforms.py --n 1000 --repeat 1   # quick check

On VMs that hand freed memory back to the host (free-page reporting), re-touching it costs a page fault per
page; the script therefore pins glibc's mmap/trim thresholds so every column reuses its memory
(``--release-memory`` keeps glibc's defaults and shows that cost).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2
import numpy as np

import kerasbd.transforms as T
from kerasbd.io import write_json, write_text
from kerasbd.reporting import markdown_table

try:
    import albumentations as A
except ImportError:  # the albumentations column is then null
    A = None

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {"32x32x3": (32, 32, 3), "55x47x3": (55, 47, 3)}


# --- per-image reference loops: the original's OpenCV calls, one image at a time ----------------------------
def _u8(img: np.ndarray) -> np.ndarray:
    return (img * 255).astype(np.uint8)


def _f(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) / 255


def _reshape(img: np.ndarray, shape) -> np.ndarray:
    return img.reshape(shape)


def loop_sat(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-4, 4), rng.uniform(0.84, 1.16))
    m[0, 2] += rng.uniform(-0.16, 0.16) * w
    m[1, 2] += rng.uniform(-0.16, 0.16) * h
    return _f(_reshape(cv2.warpAffine(_u8(img), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT), img.shape))


def loop_scaled_median(img: np.ndarray, factor: float = 180 / 224) -> np.ndarray:
    h, w = img.shape[:2]
    small = cv2.resize(img, (round(w * factor), round(h * factor)))
    return _reshape(cv2.resize(_f(cv2.medianBlur(_u8(small), 5)), (w, h)), img.shape)


def loop_lightweight(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = _reshape(_f(cv2.medianBlur(_u8(img), 5)), img.shape)
    return loop_sat(loop_scaled_median(img), rng)


def loop_rand(img: np.ndarray, rng: np.random.Generator, scalimit: float = 1.1) -> np.ndarray:
    h, w, c = img.shape
    max_h, max_w = int(h * scalimit), int(w * scalimit)
    rh = int(rng.integers(h, max_h))
    rw = min(max_w - 1, max(w, round(rh * w / h)))
    canvas = np.zeros((max_h, max_w, c), np.float32)
    top, left = int(rng.integers(0, max_h - rh)), int(rng.integers(0, max_w - rw))
    canvas[top : top + rh, left : left + rw] = _reshape(cv2.resize(img, (rw, rh)), (rh, rw, c))
    return _reshape(cv2.resize(canvas, (w, h)), img.shape)


GAMMA06, GAMMA26, MULT = T.Gamma(0.6).lut, T.Gamma(2.6).lut, T.Multiply(1.53).lut


def loop_intensive(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    mx, my = cv2.initUndistortRectifyMap(
        np.array([[w, 0, w / 2], [0, h, h / 2], [0, 0, 1]], np.float32),
        np.array([(k := rng.uniform(-0.05, 0.05)), k, 0, 0, 0], np.float32), None, None, (w, h), cv2.CV_32FC1,
    )
    u = cv2.remap(_u8(img), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    u = cv2.medianBlur(cv2.LUT(u, GAMMA06), 5)
    u = cv2.LUT(cv2.LUT(u, MULT), GAMMA26)
    small = cv2.resize(u, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_NEAREST)
    u = cv2.medianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST), 5)
    x = loop_scaled_median(_reshape(_f(u), img.shape))
    return loop_sat(loop_rand(x, rng), rng)


def loop_shrinkpad(img: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    h, w, c = img.shape
    out = np.zeros_like(img)
    i, j = int(rng.integers(0, pad + 1)), int(rng.integers(0, pad + 1))
    out[j : j + h - pad, i : i + w - pad] = _reshape(cv2.resize(img, (w - pad, h - pad)), (h - pad, w - pad, c))
    return out


def loop_median2x2(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy import ndimage

    return ndimage.median_filter(img, size=(2, 2, 1), mode="reflect")


def loop_bitdepth(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.rint(img * 31) / 31


def loop_nlm(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return cv2.fastNlMeansDenoisingColored(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), None, 2, 2, 3, 13) / 255


def loop_noise(img: np.ndarray, rng: np.random.Generator, p: float = 0.1) -> np.ndarray:
    h, w, c = img.shape
    out = img.copy()
    for r in range(h):  # the original's per-row imgaug call: a 4x4 mask per row, resized to (W, C)
        low = (rng.random((4, 4)) < p).astype(np.uint8)
        mask = cv2.resize(low, (c, w), interpolation=cv2.INTER_NEAREST).astype(bool)
        out[r][mask] = np.clip(np.round(rng.normal(128, 51.2, int(mask.sum()))), 0, 255) / 255
    return out


# --- albumentations compositions --------------------------------------------------------------------------
def _alb_lightweight(h: int, w: int, factor: float = 180 / 224):
    return A.Compose([
        A.MedianBlur(blur_limit=(5, 5), p=1),
        A.Resize(round(h * factor), round(w * factor)),
        A.MedianBlur(blur_limit=(5, 5), p=1),
        A.Resize(h, w),
        A.ShiftScaleRotate(shift_limit=0.16, scale_limit=0.16, rotate_limit=4, border_mode=cv2.BORDER_CONSTANT, p=1),
    ])


def _alb_intensive(h: int, w: int, factor: float = 180 / 224):
    rng = np.random.default_rng(0)
    return A.Compose([
        A.OpticalDistortion(distort_limit=0.05, border_mode=cv2.BORDER_REFLECT_101, p=1),
        A.RandomGamma(gamma_limit=(60, 60), p=1),
        A.MedianBlur(blur_limit=(5, 5), p=1),
        A.MultiplicativeNoise(multiplier=(1.53, 1.53), p=1),
        A.RandomGamma(gamma_limit=(260, 260), p=1),
        A.Downscale(scale_range=(0.25, 0.25), p=1),
        A.MedianBlur(blur_limit=(5, 5), p=1),
        A.Resize(round(h * factor), round(w * factor)),
        A.MedianBlur(blur_limit=(5, 5), p=1),
        A.Resize(h, w),
        A.Lambda(image=lambda img, **kw: _u8(loop_rand(_f(img), rng)), p=1),  # no albumentations equivalent of RAND
        A.ShiftScaleRotate(shift_limit=0.16, scale_limit=0.16, rotate_limit=4, border_mode=cv2.BORDER_CONSTANT, p=1),
    ])


def _alb_sat(h: int, w: int):
    return A.Compose([A.ShiftScaleRotate(shift_limit=0.16, scale_limit=0.16, rotate_limit=4, border_mode=cv2.BORDER_CONSTANT, p=1)])


def _alb_shrinkpad(h: int, w: int, pad: int = 4):
    return A.Compose([
        A.Resize(h - pad, w - pad),
        A.PadIfNeeded(min_height=h, min_width=w, position="random", border_mode=cv2.BORDER_CONSTANT, fill=0, p=1),
    ])


PIPELINES: dict[str, tuple[Callable[[], T.Transform], Callable, Callable | None, int | None]] = {
    # name: (kerasbd transform, per-image loop, albumentations factory, cap on N)
    "gym_lightweight": (T.gym_lightweight, loop_lightweight, _alb_lightweight, None),
    "gym_intensive": (T.gym_intensive, loop_intensive, _alb_intensive, None),
    "sat": (T.SAT, loop_sat, _alb_sat, None),
    "shrinkpad_4": (lambda: T.ShrinkPad(4), loop_shrinkpad, _alb_shrinkpad, None),
    "squeeze_bit_depth_5": (lambda: T.BitDepth(5), loop_bitdepth, None, None),
    "squeeze_median_2x2": (lambda: T.MedianSmoothing(2), loop_median2x2, None, None),
    "squeeze_nlm_13_3_2": (lambda: T.NonLocalMeans(13, 3, 2), loop_nlm, None, 2000),
    "nnoculation_noise_0.1": (lambda: T.NNoculationNoise(0.1), loop_noise, None, None),
}


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the process instead of returning it to the OS.

    On VMs with free-page reporting (this one: dmesg "Free page reporting enabled"), memory handed back to the
    host costs a page fault per 4 KiB when touched again: hundreds of ms per 10^4 images for every column that
    allocates large arrays (the batched ones) and almost nothing for one that recycles small blocks (the per-image
    loops). Pinning glibc's mmap and trim thresholds, as ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
    would, makes every column reuse memory alike. Returns False where glibc is not available.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int  # an int value: never masked
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    # 32 MiB is glibc's largest mmap threshold on 64-bit; 2**31 - 1 bytes of free heap top are kept untrimmed
    return all(mallopt(opt, value) == 1 for opt, value in ((m_mmap_threshold, 32 << 20), (m_trim_threshold, 2**31 - 1), (m_top_pad, 64 << 20)))


def run(n: int, repeat: int, only: list[str] | None, threads: int) -> list[dict]:
    cv2.setNumThreads(1)
    rows = []
    for size_name, shape in SIZES.items():
        for name, (make, loop, alb, cap) in PIPELINES.items():
            if only and name not in only:
                continue
            m = min(n, cap) if cap else n
            x = np.random.default_rng(0).random((m, *shape), dtype=np.float32)
            u8 = _u8(x)
            t = make()
            rng = np.random.default_rng(0)
            columns = {
                "kerasbd": lambda: t(x, 0, workers=1),
                "kerasbd_threads": lambda: t(x, 0, workers=threads),
                "loop": lambda: [loop(img, rng) for img in x],
            }
            if alb is not None and A is not None:
                comp = alb(*shape[:2])
                columns["albumentations"] = lambda: [comp(image=img)["image"] for img in u8]
            for fn in columns.values():  # untimed warm-up: first-call costs (imports, allocator growth) stay out
                fn()
            times: dict[str, list[float]] = {k: [] for k in columns}
            keys = list(columns)
            for r in range(repeat):  # interleaved, so a burst of load on the shared machine hits every column;
                for key in keys[r % len(keys):] + keys[: r % len(keys)]:  # rotated: no column always runs first
                    times[key].append(_seconds(columns[key]))
            row = {"pipeline": name, "size": size_name, "n": m}
            for key in ("kerasbd", "kerasbd_threads", "loop", "albumentations"):
                row[f"{key}_ips"] = m / float(np.median(times[key])) if key in times else None
            others = [v for v in (row["loop_ips"], row["albumentations_ips"]) if v]
            row["speedup_vs_loop"] = row["kerasbd_ips"] / row["loop_ips"]
            row["speedup_vs_albumentations"] = row["kerasbd_ips"] / row["albumentations_ips"] if row["albumentations_ips"] else None
            row["speedup_vs_best_other"] = row["kerasbd_ips"] / max(others)
            row["threads"] = threads
            row["threads_speedup_vs_best_other"] = row["kerasbd_threads_ips"] / max(others)
            row["seconds"] = {k: [round(v, 4) for v in ts] for k, ts in times.items()}
            rows.append(row)
            print(f"{name:24s} {size_name}: kerasbd {row['kerasbd_ips']:>10.0f}/s  loop {row['loop_ips']:>9.0f}/s  "
                  f"albumentations {row['albumentations_ips'] or float('nan'):>9.0f}/s  x{row['speedup_vs_best_other']:.1f} "
                  f"({threads} threads: x{row['threads_speedup_vs_best_other']:.1f})", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="images per batch (default 10000)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved timed repetitions, median kept (default 3)")
    ap.add_argument("--only", nargs="*", help="pipeline names to run (default: all)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="worker threads of the threaded kerasbd column (default: every CPU)")
    ap.add_argument("--release-memory", action="store_true", help="leave glibc's defaults (freed memory goes back to the OS)")
    ap.add_argument("--out", type=Path, default=RESULTS / "transforms.json")
    args = ap.parse_args()
    from kerasbd._quiet import import_tensorflow_quietly

    import_tensorflow_quietly(1)  # no TensorFlow start-up lines in the output
    kept = False if args.release_memory else keep_freed_memory()
    rows = run(args.n, args.repeat, args.only, args.threads)
    meta = {
        "n": args.n, "repeat": args.repeat, "opencv_threads": 1, "kerasbd_threads": args.threads, "glibc_keeps_freed_memory": kept, "opencv": cv2.__version__, "numpy": np.__version__,
        "albumentations": getattr(A, "__version__", None), "machine": platform.machine(), "cpus": os.cpu_count(),
    }
    write_json(args.out, {"meta": meta, "rows": rows})
    fmt = lambda v: "—" if v is None else f"{v:,.0f}"  # noqa: E731
    table = markdown_table([
        {"pipeline": r["pipeline"], "size": r["size"], "N": r["n"], "kerasbd img/s": fmt(r["kerasbd_ips"]),
         "per-image loop img/s": fmt(r["loop_ips"]), "albumentations img/s": fmt(r["albumentations_ips"]),
         "vs loop": f"{r['speedup_vs_loop']:.1f}x",
         "vs albumentations": "—" if r["speedup_vs_albumentations"] is None else f"{r['speedup_vs_albumentations']:.1f}x",
         "vs best other": f"{r['speedup_vs_best_other']:.1f}x",
         f"kerasbd {args.threads} threads img/s": fmt(r["kerasbd_threads_ips"]),
         "threads vs best other": f"{r['threads_speedup_vs_best_other']:.1f}x"} for r in rows
    ])
    note = (
        "# Transform throughput\n\nProduced by `python benchmarks/transforms.py"
        f"{'' if args.n == 10_000 else f' --n {args.n}'}{'' if args.repeat == 3 else f' --repeat {args.repeat}'}` (OpenCV {meta['opencv']}, albumentations "
        f"{meta['albumentations']}, OpenCV single-threaded in every column, median of {args.repeat} interleaved repeats (column order rotated each repeat, one untimed warm-up), "
        f"{meta['cpus']} CPUs shared with other jobs, so absolute rates are noisy; per-repeat seconds are in the JSON).\n"
        "The albumentations intensive composition runs GYM's RAND step as an `A.Lambda` (no equivalent exists).\n"
        f"`kerasbd img/s` processes the batch's chunks on one thread (`workers=1`), which isolates the gain from batching; "
        f"the threaded column spreads the chunks over {args.threads} threads (`workers=None`, the library default: every "
        "CPU; same output). The loop and albumentations columns process one image at a time on one thread.\n"
        + ("glibc was told to keep freed memory (mmap/trim thresholds pinned; see `keep_freed_memory`), so no column pays "
           "this VM's page-reporting refaults.\n\n" if kept else "glibc defaults: freed memory returns to the OS.\n\n")
    )
    write_text(args.out.with_suffix(".md"), note + table + "\n")


if __name__ == "__main__":
    main()
