"""Placeholder for falco-client until it lands."""


def main() -> int:
    raise SystemExit("falco-client: not built yet")
