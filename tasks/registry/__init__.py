"""Registry stage: the artifact store, the typed release manifest, releases, aliases, the gate, and the one
verified way to open a released variant."""
