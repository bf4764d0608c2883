"""Our distribution-fidelity numbers against llama.cpp's own `llama-perplexity --kl-divergence`.

Builds `llama-perplexity` from the llama.cpp source vendored in the llama-cpp-python 0.3.36 sdist
(the same llama.cpp our gguf backend runs), writes a registered corpus to a text file, runs
`--kl-divergence-base` on the parent GGUF (which saves its log-probabilities) and `--kl-divergence`
on each child, then runs harness.run.fidelity.measure_fidelity with the gguf backend on the same
tokens and context and prints both side by side.

    .venv/bin/python -m benchmarks.kld_vs_llama_perplexity --make            # F32/Q8_0/Q4_0 of the embedded model
    .venv/bin/python -m benchmarks.kld_vs_llama_perplexity --parent F32.gguf --child Q8_0.gguf --child Q4_0.gguf
        [--sdist PATH(.tar.gz or unpacked dir)] [--work DIR] [--corpus gsm8k-train] [--ctx 512] [--chunks 8]

Not run in CI: the build alone takes minutes (about 3.5 min on two cores). Expected differences:
llama.cpp stores the base's log-probabilities in 16-bit steps of (range 16 nats) / 65535 and we keep
them in float32, which moves the mean KLD by ~1e-5 and can flip "same top p" on near-ties.
Measured (--make, gsm8k-train, 8 x 512, 2 threads, 2040 scored tokens; 6m44s wall with the build
cached): Q8_0 mean KLD 0.003329 both, same top p 97.843 % both, ln ratio 0.021049 vs 0.021050;
Q4_0 mean KLD 0.203749 vs 0.203750, same top p 80.539 % both, ln ratio 0.206975 vs 0.206976;
everything else to its printed precision, except the KLD median, p99 and max (up to 6e-4
relative: the 16-bit storage of the base's log-probabilities). The clamped ln ratio/PPL(base) are what llama-perplexity prints; the exact
ones (Q8_0 0.0011, Q4_0 0.1870; PPL(base) 4.7236 = llama-perplexity's own plain perplexity run)
are printed under each table (see harness/scoring/fidelity.py).
`--make` uses llama.cpp's quantizer through llama-cpp-python (llama_model_quantize): the parent is
the embedded Q4_1 GGUF dequantised to F32, the children are Q8_0 and Q4_0 made from that F32.
"""

from __future__ import annotations

import argparse
import ctypes
import re
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path

SDIST = "llama-cpp-python==0.3.36"
VENDOR = Path("vendor") / "llama.cpp"
# llama-perplexity's final report lines -> our summary keys
PATTERNS = {
    "kld_mean": r"Mean\s+KLD:\s+(\S+)\s+±\s+(\S+)",
    "kld_median": r"Median\s+KLD:\s+(\S+)",
    "kld_p99": r"99\.0%\s+KLD:\s+(\S+)",
    "kld_max": r"Maximum KLD:\s+(\S+)",
    "same_top_pct": r"Same top p:\s+(\S+)\s+±\s+(\S+)\s*%",
    "delta_p_rms_pct": r"RMS Δp\s*:\s+(\S+)\s+±\s+(\S+)\s*%",
    "ln_ppl_ratio": r"Mean ln\(PPL\(Q\)/PPL\(base\)\)\s*:\s+(\S+)\s+±\s+(\S+)",
    "ppl_child": r"Mean PPL\(Q\)\s*:\s+(\S+)\s+±\s+(\S+)",
    "ppl_base": r"Mean PPL\(base\)\s*:\s+(\S+)\s+±\s+(\S+)",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- llama.cpp ----------------------------------------------------------------------------------


def llama_source(sdist: Path | None, work: Path) -> Path:
    """The vendored llama.cpp tree: from an unpacked sdist, a .tar.gz, or downloaded with pip."""
    if sdist is not None and sdist.is_dir():
        return sdist / VENDOR if (sdist / VENDOR).is_dir() else sdist
    if sdist is None:
        found = sorted(work.glob("llama_cpp_python-*.tar.gz"))
        if not found:
            log(f"downloading the {SDIST} sdist")
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST,
                            "-d", str(work)], check=True)
            found = sorted(work.glob("llama_cpp_python-*.tar.gz"))
        sdist = found[-1]
    root = work / sdist.name.removesuffix(".tar.gz")
    if not (root / VENDOR).is_dir():
        with tarfile.open(sdist) as archive:
            archive.extractall(work, filter="data")
    return root / VENDOR


def build_perplexity(source: Path, build: Path, jobs: int) -> Path:
    """cmake the one target, portable (-DGGML_NATIVE=OFF, as the Makefile builds llama-cpp-python)."""
    binary = build / "bin" / "llama-perplexity"
    if binary.is_file():
        return binary
    started = time.perf_counter()
    subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-DGGML_NATIVE=OFF", "-DCMAKE_BUILD_TYPE=Release",
                    "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "--target", "llama-perplexity", "-j", str(jobs)], check=True,
                   stdout=subprocess.DEVNULL)
    log(f"built {binary} in {time.perf_counter() - started:.0f} s")
    return binary


def perplexity_args(args: argparse.Namespace) -> list[str]:
    # -b n_ctx: one sequence per batch, as our backend evaluates a window; -fa off: llama-cpp-python's default
    return ["-c", str(args.ctx), "-b", str(args.ctx), "-t", str(args.threads), "-fa", "off", "--chunks", str(args.chunks)]


def run_perplexity(binary: Path, command: list[str], log_file: Path) -> str:
    started = time.perf_counter()
    result = subprocess.run([str(binary), *command], capture_output=True, text=True)
    log_file.write_text(result.stdout + result.stderr, encoding="utf-8")
    if result.returncode != 0:
        raise SystemExit(f"llama-perplexity failed ({result.returncode}); see {log_file}")
    log(f"llama-perplexity {' '.join(command[:2])} ... took {time.perf_counter() - started:.1f} s")
    return result.stdout + result.stderr


def se_key(key: str) -> str:
    """The name of a printed value's ± part: kld_mean -> kld_se, same_top_pct -> same_top_se_pct."""
    if key == "kld_mean":
        return "kld_se"
    return f"{key.removesuffix('_pct')}_se_pct" if key.endswith("_pct") else f"{key}_se"


def parse_report(text: str) -> dict[str, float]:
    """The final statistics of a --kl-divergence run (value, and `_se` where it prints one)."""
    found: dict[str, float] = {}
    for key, pattern in PATTERNS.items():
        match = re.search(pattern, text)
        if match is None:
            continue
        found[key] = float(match.group(1))
        if match.lastindex and match.lastindex > 1:
            found[se_key(key)] = float(match.group(2))
    return found


def base_file_tokens(path: Path) -> tuple[int, int, list[int]]:
    """(n_ctx, n_chunk, tokens) from a --kl-divergence-base file: "_logits_", u32 n_ctx, i32 n_vocab,
    i32 n_chunk, then n_ctx * n_chunk i32 tokens (perplexity.cpp's perplexity())."""
    with open(path, "rb") as handle:
        if handle.read(8) != b"_logits_":
            raise SystemExit(f"{path} is not a llama-perplexity logits file")
        n_ctx, _n_vocab, n_chunk = struct.unpack("<Iii", handle.read(12))
        tokens = list(struct.unpack(f"<{n_ctx * n_chunk}i", handle.read(4 * n_ctx * n_chunk)))
    return n_ctx, n_chunk, tokens


# -- models --------------------------------------------------------------------------------------


def quantize(source: Path, target: Path, ftype_name: str, threads: int) -> Path:
    import llama_cpp

    if target.is_file():
        return target
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = getattr(llama_cpp, ftype_name), True, threads
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params)) != 0:
        raise SystemExit(f"llama_model_quantize {source} -> {ftype_name} failed")
    return target


def make_models(work: Path, threads: int) -> tuple[Path, list[Path]]:
    from harness.backends import embedded

    f32 = quantize(embedded.gguf_path(), work / "smollm2-135m-f32.gguf", "LLAMA_FTYPE_ALL_F32", threads)
    children = [quantize(f32, work / f"smollm2-135m-{name.lower()}.gguf", f"LLAMA_FTYPE_MOSTLY_{name}", threads)
                for name in ("Q8_0", "Q4_0")]
    return f32, children


def ours(parent: Path, child: Path, tokens: list[int], args: argparse.Namespace) -> tuple[dict, float]:
    from harness.backends.base import make_backend, parse_model_spec
    from harness.run.fidelity import measure_fidelity

    model_args = f"n_ctx={args.ctx},n_threads={args.threads}"
    base = make_backend(parse_model_spec(f"gguf:{parent}", model_args))
    other = make_backend(parse_model_spec(f"gguf:{child}", model_args))
    started = time.perf_counter()
    try:
        return measure_fidelity(base, other, tokens, args.ctx, args.chunks), time.perf_counter() - started
    finally:
        base.close()
        other.close()


def our_tokens(parent: Path, text: str, args: argparse.Namespace) -> list[int]:
    from harness.backends.base import make_backend, parse_model_spec
    from harness.run.fidelity import corpus_tokens

    backend = make_backend(parse_model_spec(f"gguf:{parent}", f"n_ctx={args.ctx},n_threads={args.threads}"))
    try:
        return corpus_tokens(backend, text)
    finally:
        backend.close()


# -- report --------------------------------------------------------------------------------------


ROWS = ("kld_mean", "kld_se", "kld_median", "kld_p99", "kld_max", "same_top_pct", "same_top_se_pct", "delta_p_rms_pct",
        "delta_p_rms_se_pct", "ln_ppl_ratio", "ln_ppl_ratio_se", "ppl_base", "ppl_child")
# llama-perplexity's ln ratio and PPL(base) use its clamped base file: compare with our clamped keys
# (the exact ones are printed after the table)
OUR_KEY = {"same_top_se_pct": "same_top_pct_se", "delta_p_rms_se_pct": "delta_p_rms_pct_se",
           "ln_ppl_ratio": "ln_ppl_ratio_llama_cpp", "ln_ppl_ratio_se": "ln_ppl_ratio_llama_cpp_se",
           "ppl_base": "ppl_base_llama_cpp"}


def table(name: str, theirs: dict[str, float], mine: dict) -> str:
    lines = [f"\n{name}: {mine['n_tokens']} tokens in {mine['windows']} windows of {mine['n_ctx']}",
             f"{'statistic':<22}{'llama-perplexity':>18}{'harness':>14}{'difference':>14}"]
    for row in ROWS:
        a, b = theirs.get(row), mine.get(OUR_KEY.get(row, row))
        diff = f"{b - a:>14.6f}" if a is not None and b is not None else f"{'':>14}"
        lines.append(f"{row:<22}{'' if a is None else f'{a:.6f}':>18}{'' if b is None else f'{b:.6f}':>14}{diff}")
    lines.append(f"exact (no base-file clamp): ln_ppl_ratio {mine['ln_ppl_ratio']:.6f} ± {mine['ln_ppl_ratio_se']:.6f}, "
                 f"ppl_base {mine['ppl_base']:.6f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent", type=Path, help="the parent (reference) GGUF, e.g. F32")
    parser.add_argument("--child", type=Path, action="append", default=[], help="a child GGUF (repeatable)")
    parser.add_argument("--make", action="store_true", help="make F32 (parent), Q8_0 and Q4_0 of the embedded model")
    parser.add_argument("--sdist", type=Path, help="llama-cpp-python sdist (.tar.gz or unpacked); default: pip download")
    parser.add_argument("--work", type=Path, default=Path("/tmp/kld-bench"))
    parser.add_argument("--corpus", default="gsm8k-train")
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.make:
        args.parent, args.child = make_models(args.work, args.threads)
    if args.parent is None or not args.child:
        parser.error("give --parent and at least one --child, or --make")

    from harness.tasks.corpora import corpus_text

    started = time.perf_counter()
    binary = build_perplexity(llama_source(args.sdist, args.work), args.work / "build", args.threads)
    text, digest = corpus_text(args.corpus)
    corpus = args.work / f"{args.corpus}.txt"
    corpus.write_text(text, encoding="utf-8")
    base_file = args.work / f"{args.parent.stem}-{args.corpus}-{args.ctx}.kld"
    run_perplexity(binary, ["-m", str(args.parent), "-f", str(corpus), "--kl-divergence-base", str(base_file),
                            *perplexity_args(args)], args.work / "base.log")
    n_ctx, n_chunk, theirs_tokens = base_file_tokens(base_file)
    mine_tokens = our_tokens(args.parent, text, args)
    same = mine_tokens[: len(theirs_tokens)] == theirs_tokens
    print(f"corpus {args.corpus} sha256 {digest[:12]}; llama-perplexity: {n_chunk} chunks of {n_ctx}; "
          f"our tokenisation {'matches' if same else 'DIFFERS from'} its {len(theirs_tokens)} tokens")
    for child in args.child:
        report = run_perplexity(binary, ["-m", str(child), "--kl-divergence-base", str(base_file), "--kl-divergence",
                                         *perplexity_args(args)], args.work / f"{child.stem}.log")
        mine, seconds = ours(args.parent, child, theirs_tokens, args)
        print(table(f"{child.name} vs {args.parent.name}", parse_report(report), mine))
        print(f"(harness: {seconds:.1f} s)")
    print(f"\nwall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
