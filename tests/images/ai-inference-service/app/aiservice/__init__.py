"""Stand-in of the Go `ai-inference-service` for tests of the deployment.

It serves the HTTP API of docs/services.md on port 8085 and runs every inference through a
real unit-manager session, but the node stack behind it computes deterministic results.
"""
