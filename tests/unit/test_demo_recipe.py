"""The demo's recipe part: the quick waiters it hands the aws CLI, the variables it reads
back from the example's scripts, and its paragraph of the report."""

from __future__ import annotations

import subprocess
from pathlib import Path

import botocore.session
import pytest

from sluice.demo.recipe import Invocations, RecipePart, _quick_waiters, _variables
from sluice.demo.report import recipe_report


def test_the_aws_cli_finds_the_quick_rds_waiters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def delay(waiter: str) -> int:
        return int(botocore.session.get_session().get_waiter_model("rds").get_waiter(waiter).delay)

    assert delay("DBInstanceAvailable") == 30
    monkeypatch.setenv("AWS_DATA_PATH", str(_quick_waiters(tmp_path / "data")))
    assert delay("DBInstanceAvailable") == 1
    assert delay("DBInstanceDeleted") == 1


def test_variables_written_by_the_scripts_are_read_back(tmp_path: Path) -> None:
    arn = "arn:aws:secretsmanager:us-east-1:1:secret:rds!db-abc-Xy"
    script = f"""
        RDS_SECRET_ARN='{arn}' RDS_ENDPOINT=127.20.0.4
        for name in RDS_SECRET_ARN RDS_ENDPOINT; do printf '%s=%q\\n' $name "${{!name}}"; done
    """
    text = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    (tmp_path / "vars.sh").write_text(text.stdout)
    assert _variables(tmp_path / "vars.sh") == {"RDS_SECRET_ARN": arn, "RDS_ENDPOINT": "127.20.0.4"}


def test_the_recipe_paragraph_fits_the_report() -> None:
    books = [{"id": 1, "name": "AWS Cookbook"}, {"id": 2, "name": "Serverless Patterns"}]
    answer = {"statusCode": 200, "host": "127.20.0.6", "user": "admin@%", "books": books}
    crowd = Invocations(200, 20, answered=199, elapsed=6.25, peak_connections=9,
                        opened_connections=11)
    crowd.errors["Unhandled"] = 1
    part = RecipePart([("prerequisites.sh", 17.94), ("recipe.sh", 12.6)], answer, "127.20.0.6",
                      "127.20.0.4", crowd, secrets_logged=False)
    lines = recipe_report(part)
    text = "\n".join(lines)
    assert all(len(line) <= 96 for line in lines), text
    assert "17.9 s" in text and "127.20.0.4:3306" in text and "127.20.0.6:3306" in text
    assert "admin@% via 127.20.0.6: 2 rows of books" in text
    assert "199 of 200 answered, 20 at a time, in 6.2 s" in text
    assert "1 x Unhandled" in text
    assert "peak 9 open; 11 opened for 200 logins to the proxy" in text
