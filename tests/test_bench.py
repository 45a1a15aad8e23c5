"""`cicm-deploy bench` on a CPU: structure and sanity of the report (no speed is asserted)."""

from __future__ import annotations

import json

import pytest

from click.testing import CliRunner

from cicm_deploy.bench import run_bench
from cicm_deploy.cli import cli


def test_bench_checkpoint_reports_every_case_and_skips_with_reasons(routed_checkpoint):
    report = run_bench(routed_checkpoint, ["torch", "onnxruntime", "torch-fp16", "cuda-graphs", "tensorrt"],
                       [1, 2], [32], warmup=1, iterations=3)
    cases = {(r.backend, r.batch, r.size) for r in report.results}
    assert cases == {(b, n, 32) for b in ("torch", "onnxruntime") for n in (1, 2)}
    for r in report.results:
        lat = r.latency_ms
        assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"]
        assert r.throughput_ips > 0 and r.pre_ms >= 0 and r.post_ms >= 0 and r.iterations == 3
    assert set(report.skipped) == {"torch-fp16", "cuda-graphs", "tensorrt"}
    assert all(report.skipped.values())
    assert set(report.ratios()) == {("onnxruntime", 1, 32), ("onnxruntime", 2, 32)}
    assert report.host_peak_rss_mib > 0
    assert all(r.network_size == 32 for r in report.results) and "| 32 |" in "\n".join(report.markdown())
    assert all(r.host_faults_per_call is not None and r.host_faults_per_call >= 0 for r in report.results)


def test_bench_says_when_a_backend_page_faults_every_call():
    from cicm_deploy.bench import FAULTS_WORTH_A_NOTE, BenchReport, CaseResult

    def case(backend: str, faults: float | None) -> CaseResult:
        return CaseResult(backend, 1, 256, {"min": 1.0, "median": 1.0, "p90": 1.0, "p99": 1.0, "mean": 1.0},
                          1000.0, 0.1, 0.1, 3, host_faults_per_call=faults)

    quiet = BenchReport("t", "CPU", "2026-12-07", 2, {}, [case("torch", 3.0), case("onnxruntime", None)])
    assert "page faults a call" not in "\n".join(quiet.markdown())
    noisy = BenchReport("t", "CPU", "2026-12-07", 2, {}, [case("torch", FAULTS_WORTH_A_NOTE + 1.0)])
    text = "\n".join(noisy.markdown())
    assert f"torch: {FAULTS_WORTH_A_NOTE}+ minor page faults a call" in text and "GLIBC_TUNABLES=" in text


def test_bench_names_the_padded_size_the_network_ran_at(routed_checkpoint):
    report = run_bench(routed_checkpoint, ["torch"], [1], [30], warmup=1, iterations=2)
    (result,) = report.results
    assert (result.size, result.network_size) == (30, 32)
    assert "| 30 (runs 32) |" in "\n".join(report.markdown())


def test_bench_cli_writes_json_markdown_and_plot(bundles, tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(cli, ["bench", str(bundles("fp32", "onnx").path), "--backend", "torch,onnxruntime",
                                      "--batch", "1", "--size", "32", "--iterations", "2", "-o", str(out), "--plot"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [r["backend"] for r in data["results"]] == ["onnxruntime"]
    assert "bundle holds no PyTorch weights" in data["skipped"]["torch"]
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert "| onnxruntime | 1 | 32 |" in (tmp_path / "bench.md").read_text()


def test_bench_user_errors(tmp_path):
    result = CliRunner().invoke(cli, ["bench", str(tmp_path / "none.pt")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = CliRunner().invoke(cli, ["bench", str(tmp_path), "--batch", "x"])
    assert result.exit_code == 2 and "comma-separated list of integers" in result.output
    result = CliRunner().invoke(cli, ["bench", str(tmp_path), "--backend", "tvm"])
    assert result.exit_code == 2 and "unknown backends ['tvm']" in result.output
    result = CliRunner().invoke(cli, ["bench", str(tmp_path), "--backend", " , "])
    assert result.exit_code == 2 and "names no backend" in result.output
    (tmp_path / "d.json").write_text("{}")
    result = CliRunner().invoke(cli, ["bench", str(tmp_path), "-o", str(tmp_path / "d.json" / "x")])
    assert result.exit_code == 2 and "d.json is a file" in result.output  # before anything is measured


def test_bench_report_paths(tmp_path):
    from cicm_deploy.bench import report_prefix

    assert report_prefix(tmp_path / "run.v2") == tmp_path / "run.v2"  # other dots are kept
    assert report_prefix(tmp_path / "results" / "run.json") == tmp_path / "results" / "run"
    assert report_prefix(tmp_path) == tmp_path / "bench"  # a folder: the report goes inside
    assert report_prefix(f"{tmp_path}/new/") == tmp_path / "new" / "bench"  # a trailing slash names a folder to be
    assert report_prefix(f"{tmp_path}/new/", "quality") == tmp_path / "new" / "quality"
    assert not (tmp_path / "new").exists()
    assert not (tmp_path / "results").exists()  # checking creates nothing


def test_bench_on_a_static_bundle_names_its_fixed_shape(routed_checkpoint, tmp_path):
    from cicm_deploy.export.bundle import export_bundle

    bundle = export_bundle(routed_checkpoint, tmp_path / "static", static_hw=(64, 64), batch=2, check=False).path
    with pytest.raises(ValueError, match=r"fixed at 2x64x64 .*--batch 2 --size 64"):
        run_bench(bundle, ["onnxruntime"], [1, 4], [256], warmup=0, iterations=1)
    report = run_bench(bundle, ["onnxruntime"], [2], [64], warmup=0, iterations=2)
    assert [(r.batch, r.size) for r in report.results] == [(2, 64)]


def test_bench_on_a_batch_only_bundle_names_the_batch(routed_checkpoint, tmp_path):
    from cicm_deploy.export.bundle import export_bundle

    bundle = export_bundle(routed_checkpoint, tmp_path / "b2", batch=2, check=False).path
    with pytest.raises(ValueError, match=r"fixed at 2xHxW .*bench it with --batch 2$"):
        run_bench(bundle, ["onnxruntime"], [1], [64], warmup=0, iterations=1)


def test_a_backend_that_fails_is_reported_and_the_others_go_on(routed_checkpoint, tmp_path, monkeypatch):
    """A compiler bug or an out-of-memory in one backend must not cost the other backends' figures."""
    import cicm_deploy.bench as bench

    real = bench._torch_case

    def flaky(model, backend):
        case = real(model, "torch")
        if backend != "torch-compile":
            return case
        def call(feeds):
            if feeds["image"].shape[-1] > 32:  # the first size works, the second fails
                raise AssertionError("dynamo could not trace forward\nsecond line")
            return case.call(feeds)
        return bench._Case(call)

    monkeypatch.setattr(bench, "_torch_case", flaky)
    out = tmp_path / "bench"
    result = CliRunner().invoke(cli, ["bench", str(routed_checkpoint), "--backend", "torch,torch-compile",
                                      "--batch", "1", "--size", "32,64", "--iterations", "2", "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert "torch-compile failed at batch 1, 64x64: AssertionError: dynamo could not trace forward" in result.output
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [(r["backend"], r["size"]) for r in data["results"]] == [("torch", 32), ("torch-compile", 32), ("torch", 64)]
    assert data["failed"] == {"torch-compile": "batch 1, 64x64: AssertionError: dynamo could not trace forward"}
    assert "Failed (no figures from then on):" in (tmp_path / "bench.md").read_text()


def test_an_interrupted_bench_keeps_the_cases_it_finished(routed_checkpoint, tmp_path, monkeypatch):
    import cicm_deploy.bench as bench

    real, done = bench._Case.time_ms, []

    def interrupt_in_the_second_case(self, feeds):
        done.append(feeds["image"].shape[-1])
        if feeds["image"].shape[-1] > 32:
            raise KeyboardInterrupt
        return real(self, feeds)

    monkeypatch.setattr(bench._Case, "time_ms", interrupt_in_the_second_case)
    out = tmp_path / "bench"
    result = CliRunner().invoke(cli, ["bench", str(routed_checkpoint), "--backend", "torch", "--batch", "1",
                                      "--size", "32,64", "--iterations", "2", "-o", str(out)])
    assert result.exit_code != 0 and 64 in done
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [(r["backend"], r["size"]) for r in data["results"]] == [("torch", 32)] and data["finished"] is False
    assert "**Partial**" in (tmp_path / "bench.md").read_text()
    assert not list(tmp_path.glob("*.part"))


def test_every_backend_failing_still_writes_the_report_and_says_why(routed_checkpoint, tmp_path, monkeypatch):
    import cicm_deploy.bench as bench

    def broken(model, backend):
        def call(feeds):
            raise RuntimeError("CUDA out of memory")
        return bench._Case(call)

    monkeypatch.setattr(bench, "_torch_case", broken)
    out = tmp_path / "bench"
    result = CliRunner().invoke(cli, ["bench", str(routed_checkpoint), "--backend", "torch", "--batch", "1",
                                      "--size", "32", "--iterations", "2", "-o", str(out), "--plot"])
    assert result.exit_code == 1, result.output
    assert "torch failed at batch 1, 32x32: RuntimeError: CUDA out of memory" in result.output
    assert json.loads((tmp_path / "bench.json").read_text())["results"] == []
    assert not (tmp_path / "bench.png").exists()


def test_compiled_backends_are_never_timed_while_they_compile(routed_checkpoint, monkeypatch):
    """With --warmup 0 the first calls of torch.compile would be timed as inference (minutes of compile
    reported as latency): compiled backends get their own untimed calls, the others exactly --warmup."""
    import cicm_deploy.bench as bench

    calls: dict[str, int] = {}
    real = bench._torch_case

    def counted(model, backend):
        case = real(model, "torch")  # the eager path stands in for the compiler: only the call count matters

        def call(feeds):
            calls[backend] = calls.get(backend, 0) + 1
            return case.call(feeds)
        return bench._Case(call)

    monkeypatch.setattr(bench, "_torch_case", counted)
    messages: list[str] = []
    run_bench(routed_checkpoint, ["torch", "torch-compile"], [1], [32], warmup=0, iterations=2, progress=messages.append)
    assert calls == {"torch": 2, "torch-compile": bench.COMPILED_MIN_WARMUP + 2}
    assert any("torch-compile: batch 1, 32x32 (compiling" in m for m in messages)


def test_nothing_to_bench_names_each_reason_once(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    (tmp_path / "model.engine.json").write_text("{}")
    with pytest.raises(ValueError) as info:
        run_bench(engine, ["torch", "torch-fp16", "onnxruntime"], [1], [32])  # skipped alike on any machine
    message = str(info.value)
    assert message.count("an engine runs only on TensorRT") == 1
    assert "torch, torch-fp16, onnxruntime: an engine runs only on TensorRT" in message
