"""Parity of a runtime against the bundle's PyTorch FP32 goldens, with Polygraphy. No torch.

Polygraphy's Comparator runs the backend on the golden inputs and compares its outputs with the
golden outputs using per-output tolerances (``SimpleCompareFunc``): ``inpainted`` by absolute
error, ``route`` exactly (FP32) or with ``error_quantile`` = the required agreement (FP16: at
most 0.1 % of positions may route differently). On top of Polygraphy's verdict this module
reports max/mean absolute error, image PSNR and routing agreement, and checks the bundle's own
criteria (FP16 is judged on image PSNR, DESIGN §3).

Routes within the bundle's ``route_tie_margin`` of a tie (the goldens' ``route_margin``: two sets
whose scores PyTorch itself found equal to within FP32 rounding) may go to either set: they are
masked on both sides before Polygraphy compares, left out of the agreement, and counted apart.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .base import Runtime
from .bundle import Bundle, GoldenSet

GOLDEN_RUNNER = "pytorch-fp32-golden"


@dataclass
class OutputReport:
    name: str
    max_abs: float
    mean_abs: float
    psnr_db: float | None = None  # images only
    agreement: float | None = None  # routes only: fraction of positions routed identically
    passed: bool = True
    criterion: str = ""
    differing: int | None = None  # routes only: positions routed to another set (of ``positions``)
    positions: int | None = None  # routes only: positions compared (ties aside)
    ties: int | None = None  # routes only: positions within the tie margin, where either set is accepted
    ties_differing: int | None = None  # of ``ties``, those routed to the other set


@dataclass
class ParityReport:
    backend: str
    precision: str
    routing: str
    images: int
    shapes: str  # "count x H x W" per golden set
    outputs: list[OutputReport] = field(default_factory=list)
    polygraphy_passed: bool = True
    device: str = ""  # what ran: onnxruntime's execution provider, or the GPU

    @property
    def passed(self) -> bool:
        return self.polygraphy_passed and all(o.passed for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data

    def lines(self) -> list[str]:
        where = f" on {self.device}" if self.device else ""
        out = [f"parity: {self.backend}{where} ({self.precision}, routing {self.routing}) vs PyTorch FP32 on "
               f"{self.images} golden images ({self.shapes})"]
        for o in self.outputs:
            verdict = f"[{'PASS' if o.passed else 'FAIL'}: {o.criterion}]"
            if o.agreement is not None:  # set indices: only equal or not is meaningful
                tied = (f"; {o.ties} within a tie, accepted either way ({o.ties_differing} routed to the other set)"
                        if o.ties else "")
                out.append(f"  {o.name:10s} agreement {100 * o.agreement:.3f}% ({o.differing} of {o.positions} "
                           f"positions routed to another set{tied})  {verdict}")
                continue
            extra = f", PSNR {o.psnr_db:.2f} dB" if o.psnr_db is not None else ""
            out.append(f"  {o.name:10s} max abs {o.max_abs:.3g}, mean abs {o.mean_abs:.3g}{extra}  {verdict}")
        out.append(f"  polygraphy comparator: {'PASS' if self.polygraphy_passed else 'FAIL'}")
        out.append("PASSED" if self.passed else "FAILED")
        return out


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float = 1.0) -> float:
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def golden_feeds(goldens: list[GoldenSet]) -> list[dict[str, np.ndarray]]:
    return [{"image": g.image, "mask": g.mask} for g in goldens]


def golden_outputs(goldens: list[GoldenSet], names: list[str]) -> list[dict[str, np.ndarray]]:
    outs = []
    for g in goldens:
        values = {"inpainted": g.inpainted, "route": g.route}
        outs.append({n: values[n] for n in names if values.get(n) is not None})
    return outs


def tie_masks(goldens: list[GoldenSet], margin: float) -> list[np.ndarray | None]:
    """Per golden set, the routes within ``margin`` of a tie (None where the bundle stores no margins)."""
    return [g.ties(margin) if g.route is not None else None for g in goldens]


def without_ties(route: np.ndarray, ties: np.ndarray | None) -> np.ndarray:
    """``route`` with its tied positions set to -1, a set index no route has: equal on both sides."""
    if ties is None or ties.shape != route.shape or not ties.any():  # a wrong shape is the comparator's to report
        return route
    return np.where(ties, -1, route).astype(route.dtype)


def _polygraphy_runner(runtime: Runtime) -> Any:
    """OnnxrtRunner over the runtime's own session (it may carry the reference op), else an adapter."""
    if runtime.backend == "onnxruntime":
        from polygraphy.backend.onnxrt import OnnxrtRunner

        runtime.load()
        return OnnxrtRunner(runtime.session, name=runtime.backend)
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata

    class RuntimeRunner(BaseRunner):
        def activate_impl(self) -> None:
            runtime.load()

        def get_input_metadata_impl(self) -> Any:
            meta = TensorMetadata()
            for spec in runtime.bundle.manifest["inputs"]:
                meta.add(spec["name"], np.dtype(spec["dtype"]), [d if isinstance(d, int) else -1 for d in spec["shape"]])
            return meta

        def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return runtime.run(feed_dict)

        def deactivate_impl(self) -> None:
            pass

    return RuntimeRunner(name=runtime.backend)


def check_parity(runtime: Runtime, bundle: Bundle | None = None) -> ParityReport:
    from polygraphy.comparator import Comparator, RunResults
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.logger import G_LOGGER

    try:
        from polygraphy.comparator.compare import SimpleCompareFunc
    except ImportError:  # polygraphy before 0.53: the same comparison, as CompareFunc.simple (deprecated since)
        from polygraphy.comparator import CompareFunc
        SimpleCompareFunc = CompareFunc.simple

    bundle = bundle or runtime.bundle
    goldens = bundle.goldens()
    names = bundle.output_names  # goldens() refuses a CICM bundle whose sets lack their routes
    tol = bundle.tolerances
    fp16 = bundle.precision == "fp16"
    agreement_needed = float(tol.get("route_agreement", 1.0))
    ties = tie_masks(goldens, float(tol.get("route_tie_margin", 0.0)))  # no tolerance stored: no ties
    report = ParityReport(runtime.backend, bundle.precision, bundle.routing,
                          sum(len(g.image) for g in goldens), bundle.shape_summary,
                          device=str(runtime.describe().get("device", "")))

    severity, colors = G_LOGGER.module_severity, G_LOGGER.colors
    # The report below says what failed; Polygraphy's own [E] lines (and its note about the
    # optional 'colored' module) would only interleave with it.
    G_LOGGER.module_severity, G_LOGGER.colors = G_LOGGER.CRITICAL, False
    try:
        results = Comparator.run([_polygraphy_runner(runtime)], data_loader=golden_feeds(goldens))
        produced = list(results[0][1])  # the backend's iterations, one per golden size
        wanted = golden_outputs(goldens, names)
        if "route" in names:  # Polygraphy compares routes exactly: tied positions are masked on both sides
            routes = [np.asarray(it["route"]) for it in produced]  # as produced, for the report below
            for it, want, tied, route in zip(produced, wanted, ties, routes):
                it["route"], want["route"] = without_ties(route, tied), without_ties(want["route"], tied)
        reference = RunResults()
        reference.append((GOLDEN_RUNNER, [IterationResult(outputs=o, runner_name=GOLDEN_RUNNER) for o in wanted]))
        results.extend(reference)
        image_atol = float(tol["inpainted_mean_abs"]) if fp16 else float(tol["inpainted_max_abs"])
        compare = SimpleCompareFunc(
            check_shapes=True,
            atol={"inpainted": image_atol, "route": 0.0}, rtol={"inpainted": 0.0, "route": 0.0},
            check_error_stat={"inpainted": "mean" if fp16 else "max",
                              "route": "quantile" if agreement_needed < 1.0 else "max"},
            error_quantile={"route": agreement_needed})
        with np.errstate(divide="ignore", invalid="ignore"):  # relative errors at exact zeros
            accuracy = Comparator.compare_accuracy(results, compare_func=compare)
        report.polygraphy_passed = bool(accuracy)
    finally:
        G_LOGGER.module_severity, G_LOGGER.colors = severity, colors

    for name in names:
        if name == "route":
            got = np.concatenate([r.ravel() for r in routes])
            want = np.concatenate([g.route.ravel() for g in goldens])
            tied = np.concatenate([np.zeros(g.route.size, bool) if t is None else t.ravel()
                                   for g, t in zip(goldens, ties)])
            same = got == want
            compared = same[~tied]
            agreement = float(compared.mean()) if compared.size else 1.0
            error = np.abs(got.astype(np.int64) - want.astype(np.int64))[~tied]
            ok = agreement >= agreement_needed
            report.outputs.append(OutputReport(name, float(error.max(initial=0)), 1.0 - agreement,
                                               agreement=agreement, passed=ok,
                                               criterion=f"agreement >= {100 * agreement_needed:g}%",
                                               differing=int((~compared).sum()), positions=int(compared.size),
                                               ties=int(tied.sum()), ties_differing=int((~same[tied]).sum())))
            continue
        got = np.concatenate([np.asarray(it[name]).ravel() for it in produced])
        want = np.concatenate([np.asarray(o[name]).ravel() for o in wanted])
        error = np.abs(got.astype(np.float64) - want.astype(np.float64))
        value = psnr(want, got)
        if fp16:
            ok, criterion = value >= float(tol["psnr_db"]), f"PSNR >= {tol['psnr_db']} dB"
        else:
            ok, criterion = float(error.max()) <= float(tol["inpainted_max_abs"]), \
                f"max abs <= {tol['inpainted_max_abs']:g}"
        report.outputs.append(OutputReport(name, float(error.max()), float(error.mean()), psnr_db=value,
                                           passed=ok, criterion=criterion))
    return report


def save_polygraphy_data(bundle: Bundle, folder: Any) -> tuple[Any, Any]:
    """Write the goldens as Polygraphy CLI files: ``inputs.json`` (for ``--load-inputs``) and
    ``golden_outputs.json`` (RunResults, for ``--load-outputs``). Returns both paths."""
    from pathlib import Path

    from polygraphy.comparator import RunResults
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.json import save_json

    from polygraphy.logger import G_LOGGER

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    goldens = bundle.goldens()
    names = bundle.output_names
    inputs_path, outputs_path = folder / "inputs.json", folder / "golden_outputs.json"
    severity = G_LOGGER.module_severity
    G_LOGGER.module_severity = G_LOGGER.ERROR
    try:
        save_json(golden_feeds(goldens), str(inputs_path), description="cicm-deploy golden inputs")
        results = RunResults()
        results.append((GOLDEN_RUNNER, [IterationResult(outputs=o, runner_name=GOLDEN_RUNNER)
                                        for o in golden_outputs(goldens, names)]))
        results.save(str(outputs_path))
    finally:
        G_LOGGER.module_severity = severity
    return inputs_path, outputs_path


def polygraphy_command(bundle: Bundle, inputs_path: Any, outputs_path: Any) -> list[str]:
    """The ``polygraphy run`` command that checks the bundle's graph with onnxruntime."""
    tol = bundle.tolerances
    atol = f"inpainted:{tol['inpainted_max_abs']:g}" if bundle.precision == "fp32" else \
        f"inpainted:{tol['inpainted_mean_abs']:.4g}"
    command = ["polygraphy", "run", str(bundle.model_path), "--onnxrt", "--load-inputs", str(inputs_path),
               "--load-outputs", str(outputs_path), "--atol", atol, "--rtol", "0"]
    stats = ["inpainted:mean"] if bundle.precision == "fp16" else []
    if "route" in bundle.output_names:
        command[command.index("--atol") + 1:command.index("--atol") + 2] = [atol, "route:0"]
        agreement = float(tol.get("route_agreement", 1.0))
        goldens = bundle.goldens()
        ties = tie_masks(goldens, float(tol.get("route_tie_margin", 0.0)))
        if any(t is not None and t.any() for t in ties):
            # The CLI compares every position of each golden set (one iteration each): let as many
            # differ as the set has ties, wherever they are. np.quantile interpolates between sorted
            # errors: at (n - a - 1.5) / (n - 1) it lies between two zeros where a of n are not,
            # half a rank clear of the first of those (the printed quantile is rounded).
            def quantile(size: int, tied: int) -> float:
                allowed = tied + int((1.0 - agreement) * (size - tied))
                return max(0.0, (size - allowed - 1.5) / (size - 1)) if allowed else 1.0

            agreement = min(quantile(g.route.size, 0 if t is None else int(t.sum())) for g, t in zip(goldens, ties))
        if agreement < 1.0:  # at most (1 - agreement) of the positions may route differently
            stats.append("route:quantile")
            command += ["--error-quantile", f"route:{agreement:.10g}"]
    if stats:
        command += ["--check-error-stat", *stats]
    return command
