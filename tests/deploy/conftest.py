"""tests/deploy: the Helm chart, rendered by the pinned helm and decoded strictly (helpers: deploy_support.py)."""
