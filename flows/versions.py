"""``python -m flows.versions [--config FILE] [--set model_name=NAME --set store.uri=URI ...]``: a model's versions
with their lineage, and production's history."""

from __future__ import annotations

from flows.config import ModelTarget


def versions(config: ModelTarget) -> str:
    """List a model's complete versions (oldest first) and every move of its production alias."""
    from tasks.registry.aliases import read_alias
    from tasks.registry.lineage import version_rows
    from tasks.registry.release import list_versions
    from tasks.registry.store import open_store
    from tasks.tables import text_table

    store = open_store(config.store)
    alias, _ = read_alias(store, config.model_name)
    manifests = list_versions(store, config.model_name)
    if not manifests:
        return f"{config.model_name}: no complete versions in {store.uri}"
    lines = [text_table(version_rows(manifests, alias.version if alias else None))]
    if alias:
        lines += [f"\nproduction history of {config.model_name}:", text_table([
            {"at": f"{m.at[:19]}", "kind": m.kind, "from": m.from_version or "-", "to": m.to_version, "by": m.by, "reason": m.reason}
            for m in alias.history
        ])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.versions``: exit 0 listed, 2 a bad request."""
    from flows.cli import run

    return run(versions, ModelTarget, argv, summarize=lambda _, listing: listing, prog="python -m flows.versions")


if __name__ == "__main__":
    raise SystemExit(main())
