"""`feast -c feature_repo ...` works from the shell through the project launcher (embedded Redis, env filled in)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def feast(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["HYPERLIFT_HOME"] = str(home)
    command = [sys.executable, "-m", "infra.launch", "--", str(Path(sys.executable).parent / "feast"), "-c", "feature_repo", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_apply_registers_the_uplift_feature_service(tmp_path):
    applied = feast(tmp_path, "apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    listed = feast(tmp_path, "feature-services", "list")
    assert listed.returncode == 0, listed.stderr
    assert "uplift_v1" in listed.stdout
    views = feast(tmp_path, "feature-views", "list")
    assert "user_activity_fv" in views.stdout and "user_profile_fv" in views.stdout
    assert (tmp_path / "feast" / "registry.db").exists()
