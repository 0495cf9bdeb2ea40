"""`make erase USER=<id>`: make hands USER=<id> to its recipes as the login name too; the audit trail must name the
person at the terminal, never the erased user."""

import os
import subprocess
from pathlib import Path

from feature_repo.pseudonyms import lake_pseudonymizer
from infra.audit import AuditLog
from infra.keys import KEYS_FILE_ENV

REPO = Path(__file__).resolve().parents[3]


def test_make_erase_audits_the_login_not_the_erased_user(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "LOGNAME", KEYS_FILE_ENV)}
    env.update(HYPERLIFT_HOME=str(tmp_path / "home"), HYPERLIFT_AUDIT_DIR=str(tmp_path / "audit"))
    # The home's pseudonym key exists (the pipeline made it): the erased user has a lake id too.
    lake_id = lake_pseudonymizer(path=tmp_path / "home" / "keys" / "keys.json")(987654)
    done = subprocess.run(["make", "--no-print-directory", "erase", "USER=987654"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (entry,) = [e for e in AuditLog(tmp_path / "audit").entries() if e["action"] == "erasure"]
    assert entry["actor"].startswith("cli:") and "987654" not in entry["actor"]
    assert entry["target"].startswith("user_key:") and "987654" not in str(entry)
    assert str(lake_id) not in str(entry)  # nor the user's pseudonym: the trail names them by user key alone
