"""Create or update the alerting automations of infra/automations.yaml on the Prefect server of PREFECT_API_URL.

    .venv/bin/python infra/automations.py [--file infra/automations.yaml] [--webhook-url URL]

The webhook URL comes from --webhook-url or LEPTON_ALERT_WEBHOOK_URL; it is stored in the Webhook
block "lepton-alerts" (a secret field), never in the file. Without a URL nothing is created and the
command says so (exit 0): alerting is opt-in. Automations are matched by name, so running this again
updates them. Exit 2 on a file that is not valid, naming the automation and the field.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
BLOCK_NAME = "lepton-alerts"
PLACEHOLDER = "{{ webhook }}"


def load(path: Path, block_id: str) -> list:
    """The automations of ``path``, validated, with the webhook placeholder replaced by ``block_id``.

    Raises:
        ValueError: the file is not a list of automations Prefect accepts (names the entry and field).
    """
    from pydantic import ValidationError

    from prefect.automations import AutomationCore

    spec = yaml.safe_load(path.read_text())
    entries = spec.get("automations", spec) if isinstance(spec, dict) else spec
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of automations under 'automations'")
    automations = []
    for index, entry in enumerate(entries):
        for action in entry.get("actions", []):
            if action.get("block_document_id") == PLACEHOLDER:
                action["block_document_id"] = block_id
        try:
            automations.append(AutomationCore.model_validate(entry))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{path}: automation {entry.get('name', index)!r}, field {where}: {first['msg']}") from exc
    return automations


def apply(path: Path, webhook_url: str) -> list[str]:
    """Save the webhook block and upsert every automation of ``path`` by name; return the names."""
    from prefect.automations import Automation
    from prefect.blocks.webhook import Webhook

    block_id = Webhook(url=webhook_url, headers={"Content-Type": "application/json"}).save(BLOCK_NAME, overwrite=True)
    names = []
    for core in load(path, str(block_id)):
        automation = Automation(**core.model_dump())
        try:
            existing = Automation.read(name=core.name)
        except ValueError:
            automation.create()
        else:
            automation.id = existing.id
            automation.update()
        names.append(core.name)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=PROJECT / "infra" / "automations.yaml")
    parser.add_argument("--webhook-url", default=os.environ.get("LEPTON_ALERT_WEBHOOK_URL"))
    args = parser.parse_args(argv)
    if not args.webhook_url:
        print("alerting: no LEPTON_ALERT_WEBHOOK_URL set; automations of infra/automations.yaml not created")
        return 0
    try:
        names = apply(args.file, args.webhook_url)
    except ValueError as exc:
        print(f"alerting: {exc}", file=sys.stderr)
        return 2
    print(f"alerting: {len(names)} automations posting to the webhook block {BLOCK_NAME!r}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
