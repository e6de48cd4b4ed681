"""The SavedModel under hostile input, and served vs command-line results on real photos.

    python bench/bench_serving_limits.py bombs                 # saved_models/moss/1, 8 GiB
    python bench/bench_serving_limits.py bombs --cases bytes-png-4096 array-4096
    python bench/bench_serving_limits.py agreement --count 8   # ../shared/data/sirr_real_rainy

``bombs`` sends each case to the SavedModel in a fresh process whose address
space is capped (``prlimit --as``, 8 GiB by default) and prints, per case,
how the process ended, the signature's answer (an error's message, or the
result's size), the time and the process's peak RSS (see :func:`peak_rss_mb`):

* ``bytes-png-N``: a valid all-zero N x N RGB PNG (a compression bomb, a few
  hundred bytes per megapixel) to ``derain_bytes``;
* ``array-N``: an all-zero float32 ``[1, N, N, 3]`` array to ``serving_default``;
* ``array-nan``: a 64 x 64 array holding one NaN to ``serving_default``.

With ``--check``, an accepted case's result is compared with the command
line's (``Derainer.derain_uint8`` / ``Derainer.derain`` on the same pixels,
run in another process without the cap).

``agreement`` derains the first ``--count`` photos (by name) both ways:
through ``derain_bytes`` (the file's bytes) and as ``python evaluate.py
--input`` does (:func:`~moss_tf.data.images.read_image`, then
:class:`~moss_tf.infer.derain.Derainer` with the shipped weights), and prints
the maximum and mean absolute difference in grey levels per photo.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
CASES = ("bytes-png-4096", "bytes-png-16384", "array-4096", "array-nan")


def zero_png(side: int) -> bytes:
    """A valid all-zero ``side x side`` 8-bit RGB PNG, compressed row by row (no big buffer)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return len(body).to_bytes(4, "big") + kind + body + crc.to_bytes(4, "big")

    compressor = zlib.compressobj(9)
    row = bytes(1 + 3 * side)  # filter byte 0, then zeros
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def case_input(case: str):
    """``(signature, keyword, value)`` for a case."""
    import numpy as np

    kind, _, size = case.rpartition("-")
    if kind == "bytes-png":
        return "derain_bytes", "image_bytes", [zero_png(int(size))]
    if case == "array-nan":
        images = np.zeros((1, 64, 64, 3), np.float32)
        images[0, 5, 7, 1] = np.nan
        return "serving_default", "images", images
    return "serving_default", "images", np.zeros((1, int(size), int(size), 3), np.float32)


def peak_rss_mb() -> float:
    """This process's peak resident memory, in MB.

    From ``VmHWM`` in ``/proc/self/status`` where there is one: on Linux a
    child's ``getrusage().ru_maxrss`` starts at its parent's RSS when it was
    spawned (the high-water mark survives ``execve``), so a child spawned by
    a 1 GB parent reports at least 1 GB whatever it does.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case(case: str, saved_model: str, output: str | None) -> dict:
    """In the capped process: load, send, report (and save an accepted result)."""
    import numpy as np
    import tensorflow as tf

    signature, keyword, value = case_input(case)
    served = tf.saved_model.load(saved_model).signatures[signature]
    report = {"case": case, "rss_after_load_mb": round(peak_rss_mb())}
    start = time.perf_counter()
    try:
        (result,) = served(**{keyword: tf.constant(value)}).values()
    except tf.errors.OpError as err:
        report.update(outcome=type(err).__name__, message=err.message.strip().splitlines()[-2:])
    else:
        result = result.numpy()
        if signature == "derain_bytes":
            result = tf.io.decode_png(result[0]).numpy()
        report.update(outcome="result", shape=list(result.shape))
        if output:
            np.save(output, result)
    report.update(seconds=round(time.perf_counter() - start, 1), peak_rss_mb=round(peak_rss_mb()))
    return report


def command_line_result(case: str, preset: str):
    """The command line's result for a case's pixels (uint8 for files, [0, 1] for arrays)."""
    import numpy as np
    import tensorflow as tf

    from moss_tf.data import from_model_range, to_model_range
    from moss_tf.infer.derain import Derainer

    derainer = Derainer.from_preset(preset)
    signature, _, value = case_input(case)
    if signature == "derain_bytes":
        return derainer.derain_uint8(tf.io.decode_png(value[0]).numpy())
    rainy = to_model_range(value[0]).numpy()
    return from_model_range(derainer.derain_model_range(rainy)).numpy().astype(np.float32)


def bombs(args) -> int:
    prlimit = shutil.which("prlimit")
    cap = [prlimit, f"--as={int(args.address_space_gb * (1 << 30))}"] if prlimit else []
    if not prlimit:
        print("prlimit not found: running without an address-space cap")
    for case in args.cases:
        with tempfile.TemporaryDirectory() as scratch:
            output = str(Path(scratch) / "result.npy") if args.check else ""
            command = [*cap, sys.executable, __file__, "_case", case, args.saved_model, output]
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            report = (
                json.loads(lines[-1]) if lines else {"case": case, "stderr": done.stderr[-600:]}
            )
            report["exit_code"] = done.returncode
            report["wall_seconds"] = round(time.perf_counter() - start, 1)
            if args.check and report.get("outcome") == "result":
                report["vs_command_line"] = compare(case, output, args.preset)
            print(json.dumps(report), flush=True)
    return 0


def compare(case: str, output: str, preset: str) -> dict:
    """Max and mean |served - command line| (grey levels for files, [0, 1] units for arrays)."""
    import numpy as np

    served = np.load(output).astype(np.float64)
    wanted = command_line_result(case, preset).astype(np.float64)
    diff = np.abs(served - wanted)
    return {"max": float(diff.max()), "mean": float(diff.mean())}


def agreement(args) -> int:
    import numpy as np
    import tensorflow as tf

    from moss_tf.data.images import list_images, read_image
    from moss_tf.infer.derain import Derainer

    photos = list_images(args.photos)[: args.count]
    served = tf.saved_model.load(args.saved_model).signatures["derain_bytes"]
    derainer = Derainer.from_preset(args.preset)
    worst = 0
    for path in photos:
        reply = served(image_bytes=tf.constant([path.read_bytes()]))["derained_bytes"]
        got = tf.io.decode_png(reply[0]).numpy().astype(np.int32)
        want = derainer.derain_uint8(read_image(path)).astype(np.int32)
        diff = np.abs(got - want)
        worst = max(worst, int(diff.max()))
        print(
            f"{path.name}: {want.shape[1]}x{want.shape[0]}  max {diff.max()}  "
            f"mean {diff.mean():.5f}  pixels differing {np.mean(diff > 0):.5%}",
            flush=True,
        )
    print(f"largest difference over {len(photos)} photos: {worst} grey level(s)")
    return 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python bench/bench_serving_limits.py", description=__doc__
    )
    parser.add_argument("--saved-model", default=str(REPO / "saved_models" / "moss" / "1"))
    parser.add_argument("--preset", default="moss_release", help="the exported network's preset")
    sub = parser.add_subparsers(dest="command", required=True)
    bomb = sub.add_parser("bombs", help="hostile inputs under an address-space cap")
    bomb.add_argument("--cases", nargs="+", default=list(CASES), help=f"default: {CASES}")
    bomb.add_argument("--address-space-gb", type=float, default=8.0)
    bomb.add_argument("--check", action="store_true", help="compare results with the command line")
    agree = sub.add_parser("agreement", help="served vs command line on real photos")
    agree.add_argument("--photos", default=str(REPO.parent / "shared" / "data" / "sirr_real_rainy"))
    agree.add_argument("--count", type=int, default=8)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_case":  # the capped child process
        case, saved_model, output = argv[1:4]
        print(json.dumps(run_case(case, saved_model, output or None)), flush=True)
        return 0
    args = parse_args(argv)
    return bombs(args) if args.command == "bombs" else agreement(args)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
