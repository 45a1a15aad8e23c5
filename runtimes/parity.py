"""Parity of a runtime against the bundle's PyTorch FP32 goldens, with Polygraphy. No torch.

Polygraphy's Comparator runs the backend on the golden inputs and compares its outputs with the
golden outputs using per-output tolerances (``SimpleCompareFunc``): ``inpainted`` by absolute
error, ``route`` exactly (FP32) or with ``error_quantile`` = the required agreement (FP16: at
most 0.1 % of positions may route differently). On top of Polygraphy's verdict this module
reports max/mean absolute error, image PSNR and routing agreement, and checks the bundle's own
criteria (FP16 is judged on image PSNR, DESIGN §3).
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
    positions: int | None = None


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
                out.append(f"  {o.name:10s} agreement {100 * o.agreement:.3f}% ({o.differing} of {o.positions} "
                           f"positions routed to another set)  {verdict}")
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
        reference = RunResults()
        reference.append((GOLDEN_RUNNER, [IterationResult(outputs=o, runner_name=GOLDEN_RUNNER)
                                          for o in golden_outputs(goldens, names)]))
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
        got = np.concatenate([np.asarray(it[name]).ravel() for it in produced])
        want = np.concatenate([np.asarray(o[name]).ravel()
                               for o, g in zip(golden_outputs(goldens, names), goldens)], 0)
        if name == "route":
            agreement = float(np.mean(got == want))
            error = np.abs(got.astype(np.int64) - want.astype(np.int64))
            ok = agreement >= agreement_needed
            report.outputs.append(OutputReport(name, float(error.max()), float((got != want).mean()),
                                               agreement=agreement, passed=ok,
                                               criterion=f"agreement >= {100 * agreement_needed:g}%",
                                               differing=int((got != want).sum()), positions=int(got.size)))
        else:
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
        if agreement < 1.0:  # at most (1 - agreement) of the positions may route differently
            stats.append("route:quantile")
            command += ["--error-quantile", f"route:{agreement:g}"]
    if stats:
        command += ["--check-error-stat", *stats]
    return command
