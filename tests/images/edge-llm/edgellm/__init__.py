"""Stand-in of Edge-LLM-Infra (unit-manager and llm node) for tests of the deployment.

It speaks the unit-manager protocol of docs/services.md and checks model files the way the
real node does, but computes deterministic results instead of running models.
"""
