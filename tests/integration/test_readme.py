"""The README's examples, run as written against a started PMR: every `curl`, `manage.py`
and shell command of its API sections, and its Python (boto3) example.

Commands run in a folder laid out as the README assumes — the project's checkout, with
`../shared` beside it and `var/` the service's own — with `$TOKEN` and `$JOB_ID` set as a
reader would set them (the token `make run` prints; the id of the job the example before
made). Each command must succeed (2xx; cancelling a finished job is the README's 409), and
each JSON sample printed right under a command is held against the real answer: every
field the sample shows is there, and the values that do not change from run to run
(status, parameters, sizes, frame counts, labels, scores, boxes) are the sample's. The
service runs in fp32, the precision the samples were taken in.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED, missing
from tests.integration.service import ROOT, Service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = ROOT / "README.md"
SECTIONS = ("## API", "## Drop-in compatibility")  # the sections whose examples run
ENDS = "## Review dashboard"
LOCALHOST = "http://localhost:8000"
# Values that differ from run to run: ids, times, addresses, timings.
VOLATILE = {"id", "created_at", "started_at", "finished_at", "status_url", "review_url",
            "detections_url",
            "segments_url", "annotated_url", "timing", "duration", "webhook", "attempts",
            "at", "worker"}


def examples() -> list[tuple[str, str, str]]:
    """(heading, language, code) for each code block of the sections that run."""
    text = README.read_text()
    start = min(text.index(section) for section in SECTIONS)
    text = text[start:text.index(ENDS)]
    found, heading = [], ""
    for match in re.finditer(r"^(#{2,4} [^\n]*)$|^```(\w*)\n(.*?)^```$", text, re.M | re.S):
        if match.group(1):
            heading = match.group(1)
        else:
            found.append((heading, match.group(2), match.group(3)))
    return found


def commands(code: str) -> list[str]:
    """A shell block's commands: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.append(re.sub(r"\s+#\s.*$", "", line))  # a trailing comment
    return out


@pytest.fixture(scope="module")
def readme_stack(tmp_path_factory, tiny_paths):
    if not SHARED.exists():
        missing("the README's examples read ../shared/testdata")
    workdir = tmp_path_factory.mktemp("pmr-readme")
    # The README's example callback_url names example.com, which this machine cannot
    # resolve: the rule for public addresses has its own tests.
    with Service.running(workdir, DETECTOR_PRECISION="fp32") as service:
        sandbox = workdir / "reader"
        checkout = sandbox / "pmr"
        checkout.mkdir(parents=True)
        (sandbox / "shared").symlink_to(SHARED.parent)
        (checkout / "var").symlink_to(workdir / "var")
        (checkout / ".venv").symlink_to(Path(sys.prefix))
        (checkout / "manage.py").symlink_to(ROOT / "manage.py")
        (checkout / "dog.jpg").symlink_to(SHARED / "darknet" / "dog.jpg")
        (checkout / "weights").symlink_to(tiny_paths.weights.parent)  # fetch_weights' folder
        service.reader = checkout
        yield service


def shell(service: Service, command: str, env: dict) -> subprocess.CompletedProcess:
    command = command.replace(LOCALHOST, service.base_url)
    return subprocess.run(["bash", "-c", command], cwd=service.reader, capture_output=True,
                          text=True, timeout=600,
                          env={**service.env, "PYTHONPATH": str(ROOT), **env})


def curl(service: Service, command: str, env: dict) -> tuple[int, str]:
    """Run a README curl; (status, body). ``-i`` output is split from its headers."""
    result = shell(service, f"{command} -sS -w '\\n%{{http_code}}'", env)
    assert result.returncode == 0, (command, result.stderr)
    output, _, status = result.stdout.rpartition("\n")
    if " -i " in f" {command} ":
        output = output.replace("\r\n", "\n").split("\n\n")[-1]  # after 100 Continue too
    return int(status), output


def same(sample, real, path: str = "") -> list[str]:
    """Where ``real`` lacks what ``sample`` shows, or differs in a stable value."""
    problems = []
    if isinstance(sample, dict):
        if not isinstance(real, dict):
            return [f"{path}: {real!r} is not an object"]
        for key, value in sample.items():
            if key not in real:
                problems.append(f"{path}.{key}: missing")
            elif key not in VOLATILE:
                problems += same(value, real[key], f"{path}.{key}")
    elif isinstance(sample, list):
        if not isinstance(real, list) or len(real) != len(sample):
            return [f"{path}: {len(sample)} items in the sample, "
                    f"{len(real) if isinstance(real, list) else real!r} for real"]
        for index, (a, b) in enumerate(zip(sample, real, strict=True)):
            problems += same(a, b, f"{path}[{index}]")
    elif isinstance(sample, float) and isinstance(real, int | float):
        tolerance = 1e-3 if abs(sample) <= 1 else 0.5
        if abs(sample - real) > tolerance:
            problems.append(f"{path}: {sample} in the sample, {real} for real")
    elif isinstance(sample, str) and "..." in sample:
        pass  # an abridged value
    elif sample != real:
        problems.append(f"{path}: {sample!r} in the sample, {real!r} for real")
    return problems


def test_the_readme_examples_do_what_it_says(readme_stack):
    service = readme_stack
    env = {"TOKEN": service.token}
    blocks = examples()
    assert len(blocks) >= 8, "the README's examples were not found"
    last: dict | None = None  # the JSON answer of the last command, and its heading
    ran, differ = [], []
    for heading, language, code in blocks:
        if language == "json":
            if last is not None and last["heading"] == heading:
                problems = same(json.loads(code), last["body"])
                if problems:
                    differ.append(f"the sample under {last['command']!r} differs from the "
                                  "real answer:\n" + "\n".join(problems) + "\nreal answer:\n"
                                  + json.dumps(last["body"]))
            last = None
            continue
        if language == "python":
            printed, expected = run_python(service, code, env)
            if not alike(printed, expected):
                differ.append("the Python example printed:\n" + "\n".join(printed) +
                              "\nwhere its comments say:\n" + "\n".join(expected))
            ran.append("rekognition (Python)")
            continue
        if language != "sh":
            continue
        for command in commands(code):
            if not command.startswith(("curl", ".venv/bin/python", "mkdir")):
                continue  # make, docker compose: not run here
            if command.startswith(("mkdir", ".venv/bin/python")):
                result = shell(service, command, env)
                assert result.returncode == 0, (command, result.stderr)
                if "create_aws_credentials" in command:
                    env["AWS_KEYS"] = result.stdout
                if "create_api_token" in command and "--staff" in command:
                    env["STAFF_TOKEN"] = result.stdout.strip().splitlines()[-1]
                ran.append(command)
                continue
            finished_job = "/api/jobs/$JOB_ID" in command and "-X" not in command
            if finished_job or "/cancel" in command:
                # A reader polls until the job is done, as the README says; so does this.
                service.wait_job(f"{service.base_url}/api/jobs/{env['JOB_ID']}")
            status, body = curl(service, command, env)
            allowed = {409} if "/cancel" in command else set()
            assert 200 <= status < 300 or status in allowed, (command, status, body)
            ran.append(command)
            if "-o " in command or not body.strip():
                last = None
                continue
            answer = json.loads(body)
            if "/api/detect/" in command:
                env["JOB_ID"] = answer["id"]
            last = {"heading": heading, "body": answer, "command": command}
            check_parameters(command, answer)
    assert not differ, "\n\n".join(differ)
    assert any("/v1/vision/detection" in c for c in ran), ran
    assert "rekognition (Python)" in ran, ran


def check_parameters(command: str, answer: dict) -> None:
    """The parameters a command sends are the ones its job records."""
    params = answer.get("params")
    if not isinstance(params, dict):
        return
    for name, value in re.findall(r"-F (\w+)=([^@\s]+)", command):
        if name in ("min_confidence", "iou_threshold"):
            assert params[name] == float(value), (command, params)
        elif name == "classes":
            assert sorted(params[name]) == sorted(value.split(",")), (command, params)
        elif name == "frame_stride":
            assert params[name] == int(value), (command, params)


def alike(printed: list[str], expected: list[str]) -> bool:
    """The same lines, but for the last printed digit of each number."""
    if len(printed) != len(expected):
        return False
    number = r"-?\d+\.?\d*"
    for real, sample in zip(printed, expected, strict=True):
        if re.sub(number, "#", real) != re.sub(number, "#", sample):
            return False
        for a, b in zip(re.findall(number, real), re.findall(number, sample), strict=True):
            step = 10.0 ** -len(b.partition(".")[2])
            if abs(float(a) - float(b)) > 1.01 * step:
                return False
    return True


def run_python(service: Service, code: str, env: dict) -> tuple[list[str], list[str]]:
    """Run the boto3 example with the keys create_aws_credentials printed: (the lines it
    printed, the lines its comments say it prints)."""
    printed = env.get("AWS_KEYS", "")
    key = re.search(r"aws_access_key_id = (\S+)", printed)
    secret = re.search(r"aws_secret_access_key = (\S+)", printed)
    assert key and secret, "create_aws_credentials did not run before the Python example"
    script = (code.replace('"AKPMR..."', repr(key.group(1)))
              .replace('aws_secret_access_key="..."',
                       f"aws_secret_access_key={secret.group(1)!r}")
              .replace(LOCALHOST, service.base_url))
    result = subprocess.run([sys.executable, "-c", script], cwd=service.reader,
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    expected = [line[2:] for line in code.splitlines() if re.match(r"# [A-Z]\w* \d", line)]
    return result.stdout.splitlines(), expected
