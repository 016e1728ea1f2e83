"""Voice logging by policy: which calls are recorded, the recordings' checksums, retention,
export, and the alarm when a recording fails (docs/service.md, "Voice logging")."""
