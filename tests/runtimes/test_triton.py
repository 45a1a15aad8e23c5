"""Triton serving: PyTriton server with concurrent tritonclient requests, stock model repositories."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cicm_deploy.cli import cli
from cicm_deploy.runtimes.triton import (ONNX_MODEL_NAME, START_ATTEMPTS, TRT_MODEL_NAME, ServeConfig, TritonError,
                                         failure_summary, instance_handshake_race, libpython_first,
                                         write_model_repository)

pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed: pip install 'cicm-deploy[serve]'")
from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


# -- libpython and the serve configuration ---------------------------------------------------------

def test_libpython_first_puts_the_interpreters_library_first_once():
    import sysconfig

    libdir = sysconfig.get_config_var("LIBDIR")
    env = {"LD_LIBRARY_PATH": f"/usr/lib/x86_64-linux-gnu{os.pathsep}{libdir}"}
    assert libpython_first(env) == libdir
    assert env["LD_LIBRARY_PATH"].split(os.pathsep) == [libdir, "/usr/lib/x86_64-linux-gnu"]
    env = {}
    libpython_first(env)
    assert env["LD_LIBRARY_PATH"] == libdir


@pytest.mark.parametrize("kwargs, message", [
    ({"http_port": 0}, "http port 0 is not a TCP port"),
    ({"grpc_port": 8000}, "must differ"),
    ({"max_batch": 0}, "at least 1"),
    ({"instances": 0}, "at least 1"),
    ({"queue_delay_us": -1}, "must not be negative"),
])
def test_serve_config_rejects_bad_values(kwargs, message):
    with pytest.raises(TritonError, match=message):
        ServeConfig(**kwargs)


# -- stock model repositories ----------------------------------------------------------------------

def test_onnx_repository_config_parses_as_triton_model_config(bundles, tmp_path):
    bundle = bundles("fp32", "onnx")
    written = write_model_repository(bundle.path, tmp_path / "repo", max_batch=4, instances=2)
    assert written == [tmp_path / "repo" / ONNX_MODEL_NAME / "config.pbtxt"]
    config = parse_config(written[0])
    assert config.name == ONNX_MODEL_NAME and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 4
    assert {t.name: list(t.dims) for t in config.input} == {"image": [3, -1, -1], "mask": [1, -1, -1]}
    assert {t.name: list(t.dims) for t in config.output} == {"inpainted": [3, -1, -1], "route": [-1, -1]}
    types = {t.name: t.data_type for t in [*config.input, *config.output]}
    assert types == {"image": model_config_pb2.TYPE_FP32, "mask": model_config_pb2.TYPE_FP32,
                     "inpainted": model_config_pb2.TYPE_FP32, "route": model_config_pb2.TYPE_INT32}
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    model = tmp_path / "repo" / ONNX_MODEL_NAME / "1" / "model.onnx"
    assert model.read_bytes() == (bundle.path / "model.onnx").read_bytes()
    assert "tritonserver --model-repository=" in (tmp_path / "repo" / "README.md").read_text()


def test_static_batch_bundle_gets_max_batch_size_zero(routed_checkpoint, tmp_path):
    from cicm_deploy.export.bundle import export_bundle

    bundle = export_bundle(routed_checkpoint, tmp_path / "static", batch=2, static_hw=(64, 64))
    notes = []
    config = parse_config(write_model_repository(bundle.path, tmp_path / "repo", max_batch=4, on_note=notes.append)[0])
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert {t.name: list(t.dims) for t in config.input} == {"image": [2, 3, 64, 64], "mask": [2, 1, 64, 64]}
    assert len(notes) == 1 and "fixed batch" in notes[0] and "[2, 3, 64, 64]" in notes[0]  # --max-batch 4 is not silently dropped
    readme = (tmp_path / "repo" / "README.md").read_text()
    assert "`image` float32 [2, 3, 64, 64]" in readme and "multiples of" not in readme and notes[0] in readme


def fake_engine(bundle, folder: Path, module: str = "tensorrt", with_plugin: bool = True) -> Path:
    """An engine file and a sidecar as `cicm-deploy build` writes them (the engine bytes are not read)."""
    engine = folder / "model.plan"
    engine.write_bytes(b"not a real engine: the repository writer copies it")
    sidecar = {"engine": engine.name, "tensorrt_module": module, "tensorrt_version": "10.3.0",
               "gpu": {"name": "Orin"}, "bundle_files": bundle.manifest["files"],
               "profile": {"min": [1, 64, 64], "opt": [2, 256, 256], "max": [4, 512, 512]},
               "plugin": {"name": "CICMAugment"} if with_plugin else None,
               "inputs": bundle.manifest["inputs"], "outputs": bundle.manifest["outputs"]}
    (folder / "model.plan.json").write_text(json.dumps(sidecar))
    return engine


def test_tensorrt_repository_preloads_the_plugin(bundles, tmp_path):
    bundle = bundles("fp16", "plugin")
    engine = fake_engine(bundle, tmp_path)
    plugin = tmp_path / "libcicm_augment.so"
    plugin.write_bytes(b"\x7fELF stand-in")
    written = write_model_repository(bundle.path, tmp_path / "repo", engine=engine, plugin=plugin, max_batch=8)
    assert written == [tmp_path / "repo" / TRT_MODEL_NAME / "config.pbtxt"]  # plugin routing: no onnxruntime model
    config = parse_config(written[0])
    assert config.platform == "tensorrt_plan"
    assert config.max_batch_size == 4  # capped by the engine's profile
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert (tmp_path / "repo" / TRT_MODEL_NAME / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert (tmp_path / "repo" / "plugins" / plugin.name).read_bytes() == plugin.read_bytes()
    readme = (tmp_path / "repo" / "README.md").read_text()
    # the commands hold no absolute path: they still work once the repository is copied to the server
    assert f"LD_PRELOAD=$PWD/repo/plugins/{plugin.name} tritonserver --model-repository=$PWD/repo" in readme
    assert "--backend-config=tensorrt,plugins=" in readme and str(tmp_path) not in readme.split("```", 1)[1]
    assert "built for batches up to 4" in readme  # --max-batch 8, capped by the profile, is said


def test_both_models_from_an_onnx_bundle_and_its_engine(bundles, tmp_path):
    bundle = bundles("fp32", "onnx")
    engine = fake_engine(bundle, tmp_path, with_plugin=False)
    written = write_model_repository(bundle.path, tmp_path / "repo", engine=engine, onnx_kind="KIND_GPU")
    assert [p.parent.name for p in written] == [ONNX_MODEL_NAME, TRT_MODEL_NAME]
    for path in written:
        parse_config(path)


def test_repository_errors_are_one_clear_line(bundles, tmp_path):
    plugin_bundle, onnx_bundle = bundles("fp16", "plugin"), bundles("fp32", "onnx")
    with pytest.raises(TritonError, match="uses plugin routing"):
        write_model_repository(plugin_bundle.path, tmp_path / "a")
    with pytest.raises(TritonError, match="does not exist; build it on the target"):
        write_model_repository(plugin_bundle.path, tmp_path / "a", engine=tmp_path / "missing.plan")
    (tmp_path / "lonely.plan").write_bytes(b"x")
    with pytest.raises(TritonError, match="no readable sidecar"):
        write_model_repository(onnx_bundle.path, tmp_path / "a", engine=tmp_path / "lonely.plan")
    rtx = tmp_path / "rtx"
    rtx.mkdir()
    with pytest.raises(TritonError, match="TensorRT for RTX"):
        write_model_repository(onnx_bundle.path, tmp_path / "a", engine=fake_engine(onnx_bundle, rtx, "tensorrt_rtx"))
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(TritonError, match="built from another bundle"):
        write_model_repository(onnx_bundle.path, tmp_path / "a", engine=fake_engine(plugin_bundle, other))
    with pytest.raises(TritonError, match="pass --plugin"):
        write_model_repository(plugin_bundle.path, tmp_path / "a", engine=fake_engine(plugin_bundle, tmp_path))
    library = tmp_path / "libcicm_augment.so"
    library.write_bytes(b"\x7fELF stand-in")
    with pytest.raises(TritonError, match="without --engine .* loads no TensorRT plugin: drop --plugin"):
        write_model_repository(onnx_bundle.path, tmp_path / "a", plugin=library)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(TritonError, match="has no CICMAugment plugin layer .*: drop --plugin"):
        write_model_repository(onnx_bundle.path, tmp_path / "a", plugin=library,
                               engine=fake_engine(onnx_bundle, plain, with_plugin=False))
    assert not (tmp_path / "a").exists()  # nothing half-written
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(TritonError, match="--force"):
        write_model_repository(onnx_bundle.path, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(TritonError, match=r"not a model repository \(keep.txt would be deleted\)"):
        write_model_repository(onnx_bundle.path, tmp_path / "full", force=True)  # --force replaces repositories only
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    repo = tmp_path / "repo"
    write_model_repository(onnx_bundle.path, repo)
    (repo / ONNX_MODEL_NAME / "1" / "stale.onnx").write_text("from before")
    write_model_repository(onnx_bundle.path, repo, force=True)  # an earlier repository is replaced as a whole
    assert not (repo / ONNX_MODEL_NAME / "1" / "stale.onnx").exists() and (repo / "README.md").is_file()
    for out in (onnx_bundle.path, onnx_bundle.path / "repo", onnx_bundle.path.parent):  # the bundle is never deleted
        with pytest.raises(TritonError, match="overlap"):
            write_model_repository(onnx_bundle.path, out, force=True)
    assert (onnx_bundle.path / "manifest.json").is_file()
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(TritonError, match="is a file, not a model repository"):
        write_model_repository(onnx_bundle.path, tmp_path / "a-file", force=True)


def test_triton_repo_command(bundles, tmp_path, monkeypatch):
    runner = CliRunner()
    result = runner.invoke(cli, ["triton-repo", str(bundles("fp32", "onnx").path), "-o", str(tmp_path / "repo"),
                                 "--instances", "2"])
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'repo' / ONNX_MODEL_NAME / 'config.pbtxt'}" in result.output
    result = runner.invoke(cli, ["triton-repo", str(bundles("fp32", "plugin").path), "-o", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "uses plugin routing" in result.output
    assert "Traceback" not in result.output
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)  # "-o .": the repository would replace the current directory
    for extra in ([], ["--force"]):
        result = runner.invoke(cli, ["triton-repo", str(bundles("fp32", "onnx").path), "-o", ".", *extra])
        assert result.exit_code == 2 and "holds the current directory" in result.output, result.output
    assert here.is_dir() and not any(here.iterdir())


def test_serve_rejects_bad_arguments_before_starting_anything(tmp_path, bundles):
    runner = CliRunner()
    result = runner.invoke(cli, ["serve", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(cli, ["serve", str(bundles("fp32", "onnx").path), "--port", "9000", "--grpc-port", "9000"])
    assert result.exit_code == 2 and "must differ" in result.output
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(cli, ["serve", str(bundles("fp32", "onnx").path), "--port", str(port)])
    assert result.exit_code == 2 and f"the HTTP port {port} is not free" in result.output
    assert "Traceback" not in result.output


def test_serve_names_its_own_option_when_a_checkpoint_cannot_take_instances(routed_checkpoint):
    http, grpc, metrics = free_ports(3)
    result = CliRunner().invoke(cli, ["serve", str(routed_checkpoint), "--instances", "2", "--port", str(http),
                                      "--grpc-port", str(grpc), "--metrics-port", str(metrics)])
    assert result.exit_code == 2 and "--instances 2 needs a bundle or an engine" in result.output
    assert "workers" not in result.output


# -- starting and stopping (PyTriton replaced by a stand-in) ---------------------------------------

# What `cicm-deploy serve --instances 2` reported when the second instance lost PyTriton's start-up
# race (reproduced by delaying the first instance's listen() after its bind()).
HANDSHAKE_RACE = (
    "[400] load failed for model 'cicm_inpaint': version 1 is at UNAVAILABLE state: Internal: TritonModelException: "
    "Model initialize error: Traceback (most recent call last):\n"
    '  File "/tmp/folderX/1/model.py", line 425, in initialize\n'
    "    inference_handler_config = get_config_from_handshake_server(handshake_socket)\n"
    '  File "/tmp/folderX/1/communication.py", line 552, in get_config_from_handshake_server\n'
    "    sock.connect(socket_path.as_posix())\n"
    "ConnectionRefusedError: [Errno 111] Connection refused\n\n\nAt:\n  /tmp/folderX/1/model.py(454): initialize\n;\n")


def test_a_failed_start_is_one_line_with_the_server_side_error():
    line = failure_summary(RuntimeError(HANDSHAKE_RACE))
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("[400] load failed for model 'cicm_inpaint'")
    assert line.endswith("ConnectionRefusedError: [Errno 111] Connection refused")
    assert failure_summary(TimeoutError("Triton Inference Server is not ready after timeout.")) == \
        "Triton Inference Server is not ready after timeout."
    assert failure_summary(RuntimeError("")) == "RuntimeError"


def test_only_the_instance_handshake_counts_as_the_start_up_race():
    assert instance_handshake_race(HANDSHAKE_RACE)
    assert instance_handshake_race("TimeoutError: Timeout occurred while waiting for config file /w/m-config.sock")
    assert not instance_handshake_race("Triton Inference Server is not ready after timeout.")
    assert not instance_handshake_race("ConnectionRefusedError: [Errno 111] Connection refused")  # no handshake


class StandInTriton:
    """Records starts; ``failures`` are raised by the next starts; with ``signal_in_start`` a start
    sends its own process SIGTERM first. A started server that has not been signalled yet asks its
    process to stop (SIGTERM) the first time the serving loop looks at it."""

    failures: list[Exception] = []
    starts: list["StandInTriton"] = []
    signal_in_start = False
    signalled = False

    def __init__(self, config):
        self.config, self.running, self.stops = config, False, 0

    def bind(self, **kwargs):
        self.instances = len(kwargs["infer_func"])

    def run(self):
        StandInTriton.starts.append(self)
        if StandInTriton.signal_in_start:
            StandInTriton.sigterm()
        if StandInTriton.failures:
            raise StandInTriton.failures.pop(0)
        self.running = True

    @staticmethod
    def sigterm():
        StandInTriton.signalled = True
        os.kill(os.getpid(), signal.SIGTERM)

    def is_alive(self):
        if self.running and not StandInTriton.signalled:
            StandInTriton.sigterm()
        return self.running

    def stop(self):
        self.running = False
        self.stops += 1


@pytest.fixture
def stand_in(monkeypatch):
    pytest.importorskip("pytriton", reason="PyTriton is not installed: pip install 'cicm-deploy[serve]'")
    monkeypatch.setattr("pytriton.triton.Triton", StandInTriton)
    monkeypatch.setenv("LD_LIBRARY_PATH", os.environ.get("LD_LIBRARY_PATH", ""))  # serve edits it
    StandInTriton.failures, StandInTriton.starts = [], []
    StandInTriton.signal_in_start = StandInTriton.signalled = False
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield StandInTriton
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # serve put its handlers back


def _serve(bundle, *extra):
    http, grpc, metrics = free_ports(3)
    return CliRunner().invoke(cli, ["serve", str(bundle.path), "--port", str(http), "--grpc-port", str(grpc),
                                    "--metrics-port", str(metrics), *extra])


def _log_named(output: str) -> Path:
    """The Triton log file a serve run named (it is removed after a clean stop, kept otherwise)."""
    return Path(re.search(r"(?:its log|Triton's log): (\S+?)[;)]?(?:\s|$)", output).group(1))


def test_serve_starts_again_when_instances_lose_pytritons_race(stand_in, bundles):
    stand_in.failures = [RuntimeError(HANDSHAKE_RACE)]
    result = _serve(bundles("fp32", "onnx"), "--instances", "2", "--exit-timeout", "4")
    assert result.exit_code == 0, result.output
    assert f"starting again (start 2 of {START_ATTEMPTS})" in result.output
    assert "ConnectionRefusedError: [Errno 111] Connection refused" in result.output and "Traceback" not in result.output
    first, second = stand_in.starts
    assert first.stops >= 1 and second.stops >= 1  # the failed start was cleaned up before the next
    assert first.instances == second.instances == 2 and second.config.exit_timeout_secs == 4
    lines = result.output.splitlines()
    assert lines[-3].startswith("serving cicm_inpaint") and lines[-2:] == [
        "stopping (requests in flight get up to 4 s)", "stopped"]
    assert not _log_named(lines[-3]).exists()  # a clean stop leaves no log behind


def test_serve_gives_up_after_its_starts_with_one_line_and_keeps_the_log(stand_in, bundles):
    stand_in.failures = [RuntimeError(HANDSHAKE_RACE) for _ in range(START_ATTEMPTS)]
    result = _serve(bundles("fp32", "onnx"), "--instances", "2")
    assert result.exit_code == 1 and len(stand_in.starts) == START_ATTEMPTS
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: the Triton server did not start (RuntimeError: [400] load failed")
    assert "ConnectionRefusedError: [Errno 111] Connection refused); its log: " in last
    assert "Traceback" not in result.output
    log = _log_named(last)
    assert log.exists()
    log.unlink()


def test_serve_does_not_retry_other_failures(stand_in, bundles):
    stand_in.failures = [TimeoutError("Triton Inference Server is not ready after timeout.")]
    result = _serve(bundles("fp32", "onnx"), "--instances", "2")
    assert result.exit_code == 1 and len(stand_in.starts) == 1
    assert "did not start (TimeoutError: Triton Inference Server is not ready after timeout.)" in result.output
    assert "starting again" not in result.output
    _log_named(result.output).unlink()


def test_a_stop_asked_for_during_a_start_is_not_lost(stand_in, bundles):
    # PyTriton's start may swallow the interrupt (its HTTP client's gevent hub prints and drops it):
    # once the start returns, the request to stop still holds, and the server never reports serving
    stand_in.signal_in_start = True
    result = _serve(bundles("fp32", "onnx"))
    assert result.exit_code == 0, result.output
    assert len(stand_in.starts) == 1 and stand_in.starts[0].stops >= 1 and "serving" not in result.output
    assert result.output.splitlines()[-2:] == ["stopping (requests in flight get up to 10 s)", "stopped"]


def test_a_stop_during_a_failing_start_says_how_it_failed_and_keeps_the_log(stand_in, bundles):
    stand_in.signal_in_start = True
    stand_in.failures = [RuntimeError(HANDSHAKE_RACE)]
    result = _serve(bundles("fp32", "onnx"), "--instances", "2")
    assert result.exit_code == 0, result.output
    assert len(stand_in.starts) == 1 and "starting again" not in result.output  # stopping wins over a retry
    line = result.output.splitlines()[-2]
    assert line.startswith("stopping during the start, which failed (RuntimeError: [400] load failed")
    log = _log_named(line)
    assert log.exists()
    log.unlink()


def test_exit_timeout_stays_below_pytritons_kill(bundles):
    result = CliRunner().invoke(cli, ["serve", str(bundles("fp32", "onnx").path), "--exit-timeout", "26"])
    assert result.exit_code == 2 and "--exit-timeout" in result.output and "0<=x<=25" in result.output


# -- the PyTriton server ---------------------------------------------------------------------------

def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def server(bundles, tmp_path_factory):
    pytest.importorskip("pytriton", reason="PyTriton is not installed: pip install 'cicm-deploy[serve]'")
    import tritonclient.http as httpclient

    http, grpc, metrics = free_ports(3)
    bundle = bundles("fp32", "onnx")
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    exe = Path(sys.executable).with_name("cicm-deploy")
    command = [str(exe) if exe.exists() else shutil.which("cicm-deploy"), "serve", str(bundle.path),
               "--port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--max-batch", "4",
               "--instances", "2", "--exit-timeout", "5"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    client = httpclient.InferenceServerClient(f"localhost:{http}")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"cicm-deploy serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if client.is_model_ready("cicm_inpaint"):
                break
        except Exception:  # not listening yet
            pass
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail(f"the server was not ready within 180 s:\n{log.read_text()[-3000:]}")
    yield {"process": process, "http": http, "grpc": grpc, "metrics": metrics, "bundle": bundle, "log": log}
    if process.poll() is None:
        process.kill()
        process.wait()


def _request(module, url: str, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    client = module.InferenceServerClient(url)
    inputs = [module.InferInput("image", [1, *image.shape], "UINT8"), module.InferInput("mask", [1, *mask.shape], "UINT8")]
    inputs[0].set_data_from_numpy(image[None])
    inputs[1].set_data_from_numpy(mask[None])
    return client.infer("cicm_inpaint", inputs).as_numpy("inpainted")[0]


def test_concurrent_http_and_grpc_requests_match_the_inpainter(server):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from cicm_deploy import Inpainter
    from cicm_deploy.export.goldens import make_inputs

    arrays = make_inputs([(48, 64, 6), (72, 40, 6)], seed=5)
    images = [np.rint(x.transpose(1, 2, 0) * 255).astype(np.uint8) for key in ("s0.image", "s1.image")
              for x in arrays[key]]
    masks = [(m[0] > 0.5).astype(np.uint8) * 255 for key in ("s0.mask", "s1.mask") for m in arrays[key]]
    jobs = [(httpclient if i % 2 else grpcclient, f"localhost:{server['http'] if i % 2 else server['grpc']}", i)
            for i in range(len(images))]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda job: _request(job[0], job[1], images[job[2]], masks[job[2]]), jobs * 2))
    with Inpainter(server["bundle"].path) as local:
        expected = [local(image, mask) for image, mask in zip(images, masks)] * 2
    for got, want, (_, _, i) in zip(results, expected, jobs * 2):
        assert got.dtype == np.uint8 and got.shape == images[i].shape
        keep = masks[i] == 0
        assert np.array_equal(got[keep], images[i][keep])  # known pixels byte for byte
        # Triton batches same-sized requests, the local calls run one by one: float rounding may
        # differ in the last bit before the uint8 conversion, never by more.
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_bad_requests_get_the_reason_back(server):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    image = np.zeros((32, 40, 3), np.uint8)
    with pytest.raises(InferenceServerException, match="bad request: image is 40x32 but mask is 39x32"):
        _request(httpclient, f"localhost:{server['http']}", image, np.zeros((32, 39), np.uint8))
    # the server keeps serving after a bad request
    assert _request(httpclient, f"localhost:{server['http']}", image, np.zeros((32, 40), np.uint8)).shape == image.shape


def test_metrics_endpoint_counts_inferences(server):
    from urllib.request import urlopen

    import tritonclient.http as httpclient

    image = np.full((32, 40, 3), 90, np.uint8)  # one request of its own: the count holds run alone too
    _request(httpclient, f"localhost:{server['http']}", image, np.zeros((32, 40), np.uint8))
    text = urlopen(f"http://localhost:{server['metrics']}/metrics", timeout=10).read().decode()
    counts = [line for line in text.splitlines() if line.startswith("nv_inference_request_success")
              and 'model="cicm_inpaint"' in line]
    assert counts and float(counts[0].rsplit(" ", 1)[1]) >= 1


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CURL = """curl -s localhost:{port}/v2/models/cicm_inpaint/infer -d '{{"inputs": [
  {{"name": "image", "datatype": "UINT8", "shape": [1, 2, 2, 3], "data": [9,9,9, 9,9,9, 9,9,9, 0,0,0]}},
  {{"name": "mask", "datatype": "UINT8", "shape": [1, 2, 2], "data": [0, 0, 0, 255]}}]}}'"""


def test_readme_client_examples_run(server):
    done = subprocess.run([sys.executable, str(EXAMPLES / "triton_client.py"), f"localhost:{server['http']}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["(120,", "160,", "3)", "uint8", "True"]
    readme = (EXAMPLES.parent / "README.md").read_text()
    body = (EXAMPLES / "triton_client.py").read_text().splitlines()[1:]
    assert "\n".join(body) in readme  # the README shows exactly the code that is tested


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_example_runs(server):
    assert CURL.format(port=8000) in (EXAMPLES.parent / "README.md").read_text()
    done = subprocess.run(["bash", "-c", CURL.format(port=server["http"])], capture_output=True, text=True, timeout=60)
    reply = json.loads(done.stdout)
    (output,) = reply["outputs"]
    assert output["name"] == "inpainted" and output["shape"] == [1, 2, 2, 3]
    assert output["data"][:9] == [9] * 9  # known pixels come back unchanged


def test_sigterm_stops_the_server_cleanly(server):
    # runs last in this module (pytest keeps file order): the fixture's server is stopped here
    process = server["process"]
    # tritonserver's own log goes to the file the serving line names, not to the console
    triton_log = Path(re.search(r"Triton's log: (\S+);", server["log"].read_text()).group(1))
    assert f'Started HTTPService at 0.0.0.0:{server["http"]}' in triton_log.read_text()
    start = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    # the fixture's client still holds a connection: Triton waits --exit-timeout (5 s) for it,
    # not its own 30 s; unloading the model takes a few seconds more
    assert time.monotonic() - start < 25
    log = server["log"].read_text()
    # "stopped" comes after "stopping"; not necessarily last: the multiprocessing resource tracker
    # behind PyTriton's shared memory may warn after the process exits, and its output can even
    # interleave with ours (seen once in CI: "resource_tracker: '/psm_...': [Errno 2]")
    stopping = log.index("stopping (requests in flight get up to 5 s)")
    assert log.rindex("stopped") > stopping
    assert "Started HTTPService" not in log
    assert not triton_log.exists()  # a clean stop leaves no log file behind
