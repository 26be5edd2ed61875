"""docker/Dockerfile and docker/rayjob.yaml: the image installs the project the way the README does, and
the RayJob's entrypoint is a command the real CLI accepts."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from adk_ray.service.cli import build_parser
from adk_ray.service.spec import list_sweeps

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, with continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def test_dockerfile_builds_on_ray_and_installs_cpu_torch_before_the_project():
    steps = instructions((DOCKER / "Dockerfile").read_text())
    assert steps[0] == ("FROM", "rayproject/ray:2.60.0-py311")
    runs = [args for kind, args in steps if kind == "RUN"]
    torch_at = next(i for i, r in enumerate(runs) if "torch" in r)
    project_at = next(i for i, r in enumerate(runs) if re.search(r"pip install .*\s\.$", r))
    assert "download.pytorch.org/whl/cpu" in runs[torch_at] and torch_at < project_at
    copied = " ".join(args for kind, args in steps if kind == "COPY")
    assert "adk_ray" in copied and "pyproject.toml" in copied and "sweeps" in copied
    assert any(kind == "ENV" and "ADK_RAY_SWEEPS_DIR" in args for kind, args in steps)


def test_rayjob_entrypoint_is_a_valid_sweep_command():
    job = yaml.safe_load((DOCKER / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "adk_ray.sweep"]
    args = build_parser().parse_args(argv[3:])
    assert args.sweeps == ["mog_ppo"] and args.sweeps[0] in list_sweeps()
    assert args.storage.startswith("s3://")
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0"
    images = [c["image"] for c in cluster["headGroupSpec"]["template"]["spec"]["containers"]]
    images += [c["image"] for g in cluster["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]]
    assert len(set(images)) == 1  # head and workers run the same adk_ray image
