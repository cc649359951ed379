"""MBDC forward + backward: dalip.MBDC against a straightforward reference of the same math.

The reference is written the way the DeepBDC / DALIP reference code does it: a Python
loop over heads; per head, the squared distance matrix from products with an all-ones
matrix (`I_M.bmm(x_pow2 * I) + (x_pow2 * I).bmm(I_M) - 2 * x_pow2`), double centring by
more all-ones products, and the upper-triangle indices rebuilt on every call. It shares
the module's weights, and before anything is timed its outputs and gradients must agree
with ours in float64 to 1e-8 (on the device the timing runs on).

With --device cuda the calls are timed by CUDA events (`_common.time_interleaved`); with
--precision bf16 the timed calls run under bfloat16 autocast. FLOPs per dalip call are
counted by torch's FlopCounterMode; MFU is their rate over the GPU's dense bf16 peak.

    python benchmarks/bench_mbdc.py            # batch 128, 196 tokens, width 512, 4 x 46
    python benchmarks/bench_mbdc.py --device cuda --precision bf16 --batch 512
    python benchmarks/bench_mbdc.py --quick --json --no-record
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from dalip import (  # noqa: E402
    MBDC,
    brownian_distance_covariance,
    upper_triangle_indices,
    vectorize_upper_triangle,
)

TARGET_SPEEDUP = 2.5
TOLERANCE = 1e-8


def deepbdc_covariance(x: torch.Tensor, scale: float, eps: float) -> torch.Tensor:
    """(B, d, M) channels x tokens -> (B, d, d) BDC, DeepBDC's `BDCovpool` style."""
    batch, dim, _ = x.shape
    identity = torch.eye(dim, dim, device=x.device, dtype=x.dtype).view(1, dim, dim).repeat(batch, 1, 1)
    ones = torch.ones(batch, dim, dim, device=x.device, dtype=x.dtype)
    x_pow2 = x.bmm(x.transpose(1, 2))  # (B, d, d)
    dcov = ones.bmm(x_pow2 * identity) + (x_pow2 * identity).bmm(ones) - 2 * x_pow2
    dcov = torch.sqrt(torch.clamp(dcov, min=0.0) * scale + eps)
    return (
        dcov
        - 1.0 / dim * dcov.bmm(ones)
        - 1.0 / dim * ones.bmm(dcov)
        + 1.0 / (dim * dim) * ones.bmm(dcov).bmm(ones)
    )


def deepbdc_triu_vector(matrix: torch.Tensor) -> torch.Tensor:
    """(B, d, d) -> (B, d(d+1)/2), DeepBDC's `Triuvec`: indices rebuilt on every call."""
    batch, dim, _ = matrix.shape
    flat = matrix.reshape(batch, dim * dim)
    index = torch.ones(dim, dim, device=matrix.device).triu().reshape(dim * dim).nonzero(as_tuple=False)
    return flat[:, index].squeeze(-1)  # (B, d(d+1)/2)


def reference_mbdc(module: MBDC, tokens: torch.Tensor, summary: torch.Tensor) -> torch.Tensor:
    """MBDC(tokens (B, M, dim), summary (B, dim)) -> (B, out_dim), one head at a time
    (the default weighting, "after_norm": the reduced tokens are scaled by their weights)."""
    count = tokens.shape[1]
    x = module.token_proj(tokens)  # (B, M, dim)
    s = module.token_proj(summary)  # (B, dim)
    scale = 1.0 / (2.0 * count)
    if module.log_temperature is not None:
        scale = scale * module.log_temperature.exp()
    vectors = []
    for head in range(module.heads):
        part = slice(head * module.head_dim, (head + 1) * module.head_dim)
        x_head = x[:, :, part]  # (B, M, c)
        cosine = F.cosine_similarity(x_head, s[:, None, part], dim=-1)  # (B, M)
        weights = torch.softmax(cosine, dim=-1) * count  # (B, M)
        reduced = module.dropout(
            module.reduce(x_head) * weights[..., None]
        )  # (B, M, r), weighting after_norm
        bdc = deepbdc_covariance(reduced.transpose(1, 2), scale, module.eps)  # (B, r, r)
        vectors.append(deepbdc_triu_vector(bdc))
    vector = torch.cat(vectors, dim=1)  # (B, H * r(r+1)/2)
    return F.normalize(module.out_proj(module.mix(module.norm(vector))), dim=-1)


def make_inputs(args: argparse.Namespace, batch: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Tokens (B, M, dim), summaries (B, dim) and a probe (B, dim) on --device (drawn on the CPU:
    the same numbers on every device)."""
    generator = torch.Generator().manual_seed(args.seed)
    tokens = torch.randn(batch, args.tokens, args.width, generator=generator, dtype=dtype).to(args.device)
    summary = torch.randn(batch, args.width, generator=generator, dtype=dtype).to(args.device)
    probe = torch.randn(batch, args.width, generator=generator, dtype=dtype).to(args.device)
    return tokens.requires_grad_(), summary.requires_grad_(), probe


def forward_backward(function, module: MBDC, tokens, summary, probe) -> list[torch.Tensor]:
    """Output and the gradients of <output, probe> wrt inputs and every parameter."""
    module.zero_grad(set_to_none=True)
    tokens.grad = summary.grad = None
    output = function(module, tokens, summary)
    (output * probe).sum().backward()
    grads = [tokens.grad, summary.grad] + [p.grad for p in module.parameters()]
    return [output.detach()] + [g.detach().clone() for g in grads]


def check_agreement(args: argparse.Namespace, module: MBDC) -> dict[str, float]:
    """Largest differences (float64, eval mode) between ours and the reference.

    Raises AssertionError when the output differs by more than 1e-8, or a gradient by
    more than 1e-8 relative to its largest entry.
    """
    module = module.double().eval()
    inputs = make_inputs(args, args.check_batch, torch.float64)
    ours = forward_backward(lambda m, t, s: m(t, s), module, *inputs)
    reference = forward_backward(reference_mbdc, module, *inputs)
    module.float().train()
    output_difference = (ours[0] - reference[0]).abs().max().item()
    gradient_difference = max(
        ((a - b).abs().max() / b.abs().max().clamp_min(1.0)).item() for a, b in zip(ours[1:], reference[1:])
    )
    if not (output_difference <= TOLERANCE and gradient_difference <= TOLERANCE):
        raise AssertionError(
            f"dalip.MBDC and the reference disagree in float64: output max |diff| "
            f"{output_difference:.3g}, gradient max relative diff {gradient_difference:.3g} "
            f"(tolerance {TOLERANCE:g}); refusing to time code that computes something else"
        )
    return {"output_max_abs_diff": output_difference, "gradient_max_rel_diff": gradient_difference}


def variant_calls(args: argparse.Namespace, module: MBDC) -> dict[str, Callable[[], None]]:
    """Forward + backward per variant, float32 weights, train mode, under --precision.

    "dalip" and "reference" are the whole module; "dense_floor" is only the linear layers
    both share (token projection of tokens and summary, the vector_dim x vector_dim mix,
    the output projection), the time no implementation of this math can go below.
    """
    tokens, summary, probe = make_inputs(args, args.batch, torch.float32)
    vector = torch.randn(args.batch, module.vector_dim, device=args.device, requires_grad=True)

    def whole(function):
        def run() -> None:
            module.zero_grad(set_to_none=True)
            tokens.grad = summary.grad = None
            (function(module, tokens, summary) * probe).sum().backward()

        return run

    def dense_floor() -> None:
        module.zero_grad(set_to_none=True)
        tokens.grad = summary.grad = vector.grad = None
        projected = module.token_proj(tokens).sum() + module.token_proj(summary).sum()
        (projected + (module.out_proj(module.mix(vector)) * probe).sum()).backward()

    calls = {
        "dalip": whole(lambda m, t, s: m(t, s)),
        "reference": whole(reference_mbdc),
        "dense_floor": dense_floor,
    }
    return {name: _common.under_precision(call, args.precision, args.device) for name, call in calls.items()}


def time_bdc_only(args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """BDC + upper-triangle vectors alone on (B, H, M, r) reduced tokens, forward + backward."""
    reduced = torch.randn(
        args.batch, args.heads, args.tokens, args.reduced_dim, device=args.device, requires_grad=True
    )
    indices = upper_triangle_indices(args.reduced_dim, device=reduced.device)
    scale = 1.0 / (2.0 * args.tokens)

    def ours() -> None:
        reduced.grad = None
        vectorize_upper_triangle(brownian_distance_covariance(reduced), indices).sum().backward()

    def reference() -> None:
        reduced.grad = None
        vectors = [
            deepbdc_triu_vector(deepbdc_covariance(reduced[:, h].transpose(1, 2), scale, 1e-5))
            for h in range(args.heads)
        ]
        torch.cat(vectors, dim=1).sum().backward()

    calls = {"dalip": ours, "reference": reference}
    return _common.time_interleaved(
        {name: _common.under_precision(call, args.precision, args.device) for name, call in calls.items()},
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=196, help="tokens per sample (M)")
    parser.add_argument("--width", type=int, default=512, help="token width (dim)")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--reduced-dim", type=int, default=46)
    parser.add_argument("--repeats", type=int, default=7, help="timed calls of each variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--check-batch",
        type=int,
        default=None,
        help="batch of the float64 agreement check (default: --batch)",
    )
    _common.add_run_arguments(parser, "batch 32, check batch 8, 3 repeats: under a minute")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.repeats = min(args.batch, 32), min(args.repeats, 3)
        args.check_batch = args.check_batch or 8
    args.check_batch = args.check_batch or args.batch
    return args


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: _common.summary(values)["median"] for name, values in times.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    module = MBDC(args.width, heads=args.heads, reduced_dim=args.reduced_dim).to(args.device)
    load_before = _common.load_average()
    agreement = check_agreement(args, module)
    calls = variant_calls(args, module)
    times = _common.time_interleaved(calls, repeats=args.repeats, warmup=args.warmup, device=args.device)
    flops = _common.count_flops(calls["dalip"])
    bdc_times = time_bdc_only(args)
    wall, cpu = medians(times["wall"]), medians(times["cpu"])
    info = {**_common.machine(args.device), "load_average_before": load_before}
    bdc_wall = medians(bdc_times["wall"])
    speedup = wall["reference"] / wall["dalip"]
    paired = _common.paired_ratios(times["wall"]["reference"], times["wall"]["dalip"])
    return {
        "speedup": round(speedup, 3),
        "speedup_paired_median": round(_common.summary(paired)["median"], 3),
        "speedup_cpu_time": round(cpu["reference"] / cpu["dalip"], 3),
        "target_speedup": TARGET_SPEEDUP,
        "target_met": speedup >= TARGET_SPEEDUP,
        "best_possible_speedup": round(wall["reference"] / wall["dense_floor"], 3),
        "speedup_beyond_dense_floor": round(
            (wall["reference"] - wall["dense_floor"]) / max(wall["dalip"] - wall["dense_floor"], 1e-9), 3
        ),
        "bdc_only_speedup": round(bdc_wall["reference"] / bdc_wall["dalip"], 3),
        "seconds": {
            name: {k: round(v, 4) for k, v in _common.summary(values).items()}
            for name, values in times["wall"].items()
        },
        "cpu_seconds_median": {name: round(v, 4) for name, v in cpu.items()},
        "bdc_only_seconds_median": {name: round(v, 4) for name, v in bdc_wall.items()},
        "agreement_float64": {**agreement, "check_batch": args.check_batch, "tolerance": TOLERANCE},
        "shape": {
            "batch": args.batch,
            "tokens": args.tokens,
            "width": args.width,
            "heads": args.heads,
            "reduced_dim": args.reduced_dim,
            "vector_dim": module.vector_dim,
        },
        "dalip_flops_per_call": flops,
        "dalip_mfu": _common.mfu(flops, wall["dalip"], info.get("gpu_peak_bf16_flops")),
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "precision": args.precision,
        "machine": info,
    }


def report(figures: dict[str, Any]) -> str:
    labels = {
        "dalip": "dalip.MBDC",
        "reference": "reference (head loop, all-ones products)",
        "dense_floor": "shared linear layers only (floor)",
    }
    rows = [
        [
            labels[name],
            f"{s['median']:.3f}",
            f"{s['min']:.3f}",
            f"{s['max']:.3f}",
            f"{figures['cpu_seconds_median'][name]:.3f}",
        ]
        for name, s in figures["seconds"].items()
    ]
    shape, check = figures["shape"], figures["agreement_float64"]
    verdict = "met" if figures["target_met"] else "MISSED"
    bdc = figures["bdc_only_seconds_median"]
    mfu = figures["dalip_mfu"]
    return "\n".join(
        [
            f"Forward + backward, {_common.conditions(figures)}, train mode, {figures['threads']} thread(s); "
            f"batch {shape['batch']}, "
            f"{shape['tokens']} tokens, width {shape['width']}, {shape['heads']} heads x reduced dim "
            f"{shape['reduced_dim']} ({shape['vector_dim']} values); {figures['repeats']} interleaved repeats.",
            "",
            _common.format_table(["variant", "median s", "min s", "max s", "median CPU s"], rows),
            "",
            f"- Speedup (reference / dalip, ratio of wall-clock medians): **{figures['speedup']:.2f}x** "
            f"(median of paired ratios {figures['speedup_paired_median']:.2f}x, CPU-time ratio "
            f"{figures['speedup_cpu_time']:.2f}x); target >= {figures['target_speedup']}x: {verdict}.",
            f"- Best possible speedup against this reference (reference / shared linear layers): "
            f"{figures['best_possible_speedup']:.2f}x; on the time above that floor dalip is "
            f"{figures['speedup_beyond_dense_floor']:.2f}x faster.",
            f"- BDC + upper-triangle vectors alone (batched vs head loop with all-ones products): "
            f"{figures['bdc_only_speedup']:.2f}x ({bdc['dalip']:.4f} s vs {bdc['reference']:.4f} s).",
            f"- Float64 agreement (batch {check['check_batch']}, eval mode): output max |diff| "
            f"{check['output_max_abs_diff']:.2g}, gradients max relative diff "
            f"{check['gradient_max_rel_diff']:.2g} (tolerance {check['tolerance']:g}).",
            f"- FLOPs per dalip.MBDC call (FlopCounterMode, forward + backward): "
            f"{figures['dalip_flops_per_call'] / 1e9:.4g} GFLOP; MFU "
            f"{'- (no known peak)' if mfu is None else f'{100 * mfu:.2f}% of the dense bf16 peak'}.",
            f"- Load average before / after: {figures['machine']['load_average_before']} / "
            f"{figures['machine']['load_average']}.",
        ]
    )


def summary(figures: dict[str, Any]) -> _common.Summary:
    """RESULTS.md's row: the speedup over the reference, and the most this reference allows."""
    return _common.Summary(
        "MBDC forward + backward, dalip.MBDC against the head-loop reference",
        f"speedup {figures['speedup']:.2f}x (best possible against this reference "
        f"{figures['best_possible_speedup']:.2f}x)",
        f">= {figures['target_speedup']}x: {'met' if figures['target_met'] else 'MISSED'}",
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    figures = run(args)
    _common.publish(
        args, argv, "bench_mbdc.py", "MBDC forward + backward", figures, report(figures), summary(figures)
    )
    return figures


if __name__ == "__main__":
    main()
