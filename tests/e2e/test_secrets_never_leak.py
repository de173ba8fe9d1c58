"""Secret values never reach shipyard's output, journal, state store or artifacts (§10.7).

The demo's backend echoes its JWT secret at start and then exits, so the secret is in the
release's own log; shipyard shows that log's tail in the error, and must
redact it there, in the journal and everywhere it stores or prints anything.
"""

from __future__ import annotations

from pathlib import Path

from shipyard.core.secrets import parse_dotenv
from tests.conftest import RunCli, commit_all


def test_secret_values_are_redacted_everywhere(shop: Path, run_cli: RunCli) -> None:
    secrets = parse_dotenv((shop / ".env.local").read_text())
    values = [v for k, v in secrets.items() if k in ("JWT_SECRET", "STRIPE_SECRET_KEY")]
    assert values and all(len(v) >= 16 for v in values)
    config = shop / "shipyard.toml"
    text = config.read_text()
    text = text.replace(
        'start = "python app.py --port $PORT"\nport',
        'start = "echo boot with $JWT_SECRET; exit 1"\nport',
        1,
    ).replace('deadline = "20s"', 'deadline = "1s"')  # it exits at once: 1 s shows its log
    assert "echo boot" in text
    config.write_text(text)
    commit_all(shop, "backend echoes its secret and exits")

    outputs = []
    deploy = run_cli("-C", str(shop), "deploy", timeout=120)
    outputs.append(deploy.stdout + deploy.stderr)
    assert deploy.returncode == 1, outputs[-1]
    assert "[redacted JWT_SECRET]" in outputs[-1]  # the log tail was shown, redacted
    json_deploy = run_cli("-C", str(shop), "--json", "deploy", "--full", timeout=120)
    outputs.append(json_deploy.stdout + json_deploy.stderr)
    history = run_cli("-C", str(shop), "--json", "history")
    outputs.append(history.stdout)
    for line in history.stdout.split('"id": "')[1:]:
        deployment = line.split('"', 1)[0]
        outputs.append(run_cli("-C", str(shop), "logs", deployment).stdout)
        outputs.append(run_cli("-C", str(shop), "--json", "status", deployment).stdout)
    outputs.append(run_cli("-C", str(shop), "--json", "status").stdout)

    stored = (shop / ".shipyard" / "state.db").read_bytes()
    wal = shop / ".shipyard" / "state.db-wal"
    if wal.exists():
        stored += wal.read_bytes()
    artifacts = b"".join(
        f.read_bytes() for f in (shop / ".shipyard" / "artifacts").rglob("*") if f.is_file()
    )
    agent_state = b"".join(
        f.read_bytes() for f in (shop / ".shipyard").rglob("state.json") if f.is_file()
    )
    assert agent_state  # the agent kept its state: and only env file paths, not values
    for value in values:
        assert value.encode() not in agent_state
        for text_out in outputs:
            assert value not in text_out
        assert value.encode() not in stored
        assert value.encode() not in artifacts  # builds never see secrets
